// libvirt's memory backing directory as a podfs mount: libvirt makes a
// directory per domain there and its QEMU (running as libvirt-qemu) creates
// and maps pc.ram in it, so the RAM of every file-backed domain becomes a
// region in the memory pods. Mount it before libvirtd starts: libvirtd
// exits when that directory fails under it (shared/FACTS.md).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/cpuserver/podfs.h>

namespace vmpod::libvirt {

inline constexpr std::string_view kDefaultRamBackingDir = "/run/vmpod/libvirt-ram";

struct RamBackingConfig {
  std::string dir = std::string(kDefaultRamBackingDir);
  std::vector<net::SocketAddress> memory_pods;
  net::FabricConfig fabric;
  uint64_t stripe_bytes = 1u << 20;
  uint64_t local_cache_bytes = 0;
};

// Creates `dir` if it is missing and mounts podfs on it for other users.
// kAlreadyExists when something is mounted there already (a podfs left by
// a backing that died: `umount -l` it).
Result<std::unique_ptr<cpuserver::Podfs>> mount_ram_backing(const RamBackingConfig& config);

}  // namespace vmpod::libvirt
