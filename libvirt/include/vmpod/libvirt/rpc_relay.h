// `vmpod:///system`: libvirt's client library connects to
// /run/libvirt/virtvmpodd-sock for the vmpod scheme (shared/FACTS.md). The
// relay listens there and passes libvirt's RPC to libvirtd byte for byte,
// descriptors included, rewriting only the URI (rpc.h), so virsh and every
// libvirt client get libvirt's QEMU driver under vmpod's name.
//
// Each client reaches libvirtd as itself: the relay connects to libvirtd's
// socket with the client's uid, gid and groups (SO_PEERCRED,
// SO_PEERGROUPS), so libvirtd applies its own socket permissions and
// authentication to the real client; the relay's socket copies the owner,
// group and mode of libvirtd's. A relay that is not root can act only for
// its own user.
//
// It also takes part in `virsh migrate` of domains whose RAM is in memory
// pods, so that their RAM is not copied (migration.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/libvirt/migration.h>
#include <vmpod/libvirt/ram_backing.h>
#include <vmpod/net/stream_server.h>

namespace vmpod::libvirt {

inline constexpr std::string_view kRelaySocket = "/run/libvirt/virtvmpodd-sock";
inline constexpr std::string_view kLibvirtdSocket = "/run/libvirt/libvirt-sock";
// libvirt's read-only socket is its read-write one's path with this suffix.
inline constexpr std::string_view kReadOnlySuffix = "-ro";

struct RpcRelayConfig {
  std::string socket = std::string(kRelaySocket);
  std::string libvirtd_socket = std::string(kLibvirtdSocket);
  std::string memory_backing_dir = std::string(kDefaultRamBackingDir);  // this host's podfs
};

class RpcRelay {
 public:
  // Serves `socket` for `libvirtd_socket`, and `socket`-ro for
  // `libvirtd_socket`-ro when libvirtd has that one. kNotFound when
  // libvirtd's socket is missing: start libvirtd first.
  static Result<std::unique_ptr<RpcRelay>> start(const RpcRelayConfig& config);
  ~RpcRelay();  // closes every relayed connection and removes the sockets

 private:
  explicit RpcRelay(const RpcRelayConfig& config)
      : migration_host_(config.memory_backing_dir, config.libvirtd_socket) {}
  MigrationHost migration_host_;  // before the servers, whose connections use it
  std::vector<std::unique_ptr<net::StreamServer>> servers_;
};

}  // namespace vmpod::libvirt
