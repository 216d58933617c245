// What vmpod reads from a libvirt domain's XML, as libvirt hands it to its
// hook: the name and id, whether its RAM is a file, and the vmpod element
// in <metadata> that places that RAM:
//
//   <metadata>
//     <vmpod:memory xmlns:vmpod="https://vmpod.dev/xmlns/libvirt/1" pods="2" stripe="1M"/>
//   </metadata>
//
// pods: how many memory pods (those with most free pages), or their ids
// ("mem0,mem3"); stripe: the stripe size. Either may be left out: the
// backing's own then.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod::libvirt {

inline constexpr std::string_view kMetadataNamespace = "https://vmpod.dev/xmlns/libvirt/1";
// libvirt's namespace for QEMU command-line arguments, and the chardev id
// of vmpod's own QMP monitor there (migration.h).
inline constexpr std::string_view kQemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0";
inline constexpr std::string_view kVmpodMonitorId = "vmpod-monitor";

struct Domain {
  std::string name;
  std::string uuid;          // as <uuid> has it
  int id = -1;               // -1 for a domain that is not running
  bool file_backed = false;  // <memoryBacking><source type='file'/>
  // The vmpod element as podfs placement text ("pods=2 stripe=1M"); none:
  // vmpod leaves the domain alone.
  std::optional<std::string> placement;
  // A DAC <seclabel> with a <label> ("+UID:+GID" or "USER:GROUP"): the user
  // this domain's QEMU runs as instead of qemu.conf's.
  std::optional<std::string> dac_label;
  // vmpod's QMP monitor is on its QEMU command line (<qemu:commandline>).
  bool vmpod_monitor = false;
};

// kInvalidArgument, with what is wrong, for XML that is not a domain or a
// vmpod element vmpod cannot honour.
Result<Domain> parse_domain(std::string_view xml);

// The directory libvirt gives a running domain's RAM files under its
// memory_backing_dir: libvirt/qemu/ID-NAME, the name cut to 20 characters
// as libvirt cuts it (virDomainDefGetShortName).
std::string domain_ram_dir(const Domain& domain);

}  // namespace vmpod::libvirt
