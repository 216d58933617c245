// Feeds arbitrary bytes to the hook's domain XML reader (the XML comes from
// whoever may define domains) and to the placement text podfs takes from a
// setxattr: neither may crash, and what they accept must hold together: a
// domain's placement parses as podfs placement text, its RAM directory stays
// below libvirt/qemu, and a parsed placement written out reads back the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <vmpod/cpuserver/podfs_placement.h>
#include <vmpod/libvirt/domain.h>

using namespace vmpod;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto domain = libvirt::parse_domain(input);
  if (domain) {
    if (domain->name.empty()) std::abort();
    if (domain->placement && !cpuserver::parse_placement(*domain->placement)) std::abort();
    std::string dir = libvirt::domain_ram_dir(*domain);
    if (dir.rfind("libvirt/qemu/", 0) != 0) std::abort();
  }
  auto placement = cpuserver::parse_placement(input);
  if (placement && !placement->pod_ids.empty()) {
    auto again = cpuserver::parse_placement(cpuserver::format_placement(placement->pod_ids, placement->stripe_bytes
                                                                                                ? placement->stripe_bytes
                                                                                                : 4096));
    if (!again || again->pod_ids != placement->pod_ids) std::abort();
  }
  return 0;
}
