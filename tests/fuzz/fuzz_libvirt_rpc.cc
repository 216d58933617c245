// Feeds arbitrary bytes, cut into packets by their length words as the
// relay cuts a socket's stream, to the vmpod:///system relay's packet
// reader and rewriter in both directions (clients and libvirtd are both
// untrusted to it), to the readers of the migration calls it takes part
// in, and to its edit of the domain XML of define and create calls. Nothing may crash, and every packet it passes on or answers
// with must parse as a packet again.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <vmpod/libvirt/migration.h>
#include <vmpod/libvirt/rpc.h>

using namespace vmpod::libvirt;

namespace {

void check_packet(const std::string& packet) {
  auto header = rpc::parse_header(packet);
  if (!header) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  rpc::UriRewriter rewriter;
  bool from_client = true;
  while (input.size() >= rpc::kLengthBytes) {
    auto length = rpc::packet_length(input.substr(0, rpc::kLengthBytes));
    if (!length || *length > input.size()) break;
    std::string packet(input.substr(0, *length));
    input.remove_prefix(*length);
    auto header = rpc::parse_header(packet);
    if (!header) continue;
    (void)rpc::fd_count(*header, packet);
    (void)rpc::migration_call(*header, packet);
    (void)rpc::finish3_domain(packet);
    auto edited = rpc::edit_begin3_xml(packet, [](std::string_view xml) -> vmpod::Result<std::string> {
      return std::string(xml) + "<x/>";
    });
    if (edited) check_packet(*edited);
    // A define or create call, its XML given vmpod's monitor as the relay does.
    auto defined = rpc::edit_domain_xml_call(*header, packet, [](std::string_view xml) {
      return with_vmpod_monitor(xml, "/run/vmpod/libvirt-ram");
    });
    if (defined && *defined) check_packet(**defined);
    if (from_client) {
      auto out = rewriter.from_client(packet);
      if (out) check_packet(out->packet);
    } else {
      auto out = rewriter.from_daemon(packet);
      if (out) check_packet(*out);
    }
    from_client = !from_client;
  }
  return 0;
}
