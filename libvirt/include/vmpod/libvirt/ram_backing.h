// libvirt's memory backing directory as a podfs mount: libvirt makes a
// directory per domain there and its QEMU (running as libvirt-qemu) creates
// and maps pc.ram in it, so the RAM of every file-backed domain becomes
// regions in the memory pods. Mount it before libvirtd starts: libvirtd
// exits when that directory fails under it (shared/FACTS.md).
//
// A lost memory pod fails only the domains with RAM on it: their QEMU is
// killed, so libvirt sees it crash and marks the domain shut off (crashed);
// libvirtd and every other domain go on.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <sys/types.h>

#include <vmpod/base/periodic_task.h>
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

class RamBacking {
 public:
  // Creates `dir` if it is missing and mounts podfs on it for other users.
  // kAlreadyExists when something is mounted there already (a podfs left by
  // a backing that died: `umount -l` it).
  static Result<std::unique_ptr<RamBacking>> mount(const RamBackingConfig& config);
  ~RamBacking();  // stops watching, then unmounts

  cpuserver::Podfs& podfs() { return *podfs_; }

 private:
  RamBacking(std::string dir, std::unique_ptr<cpuserver::Podfs> podfs);
  void fail_domains_on_lost_pods();

  std::string dir_;
  std::unique_ptr<cpuserver::Podfs> podfs_;
  std::set<pid_t> killed_;
  PeriodicTask watch_;  // last: it uses the members above
};

// The processes that map `path` (from /proc/PID/maps).
std::vector<pid_t> processes_mapping(const std::string& path);

}  // namespace vmpod::libvirt
