// The compute pod as a library: runs guests (a podfs mount for the RAM and a
// supervised QEMU each), answers the vmm over its control socket, and
// reports a guest failed, with the reason, when QEMU dies or a memory pod
// behind its RAM is lost. `vmpod cpuserver` is a thin wrapper.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/cpuserver/podfs.h>
#include <vmpod/cpuserver/qemu.h>
#include <vmpod/net/socket.h>

namespace vmpod::cpuserver {

struct ComputePodConfig {
  std::string pod_id = "cpu0";
  net::SocketAddress control;
  std::string run_dir = "/run/vmpod/cpu0";  // one subdirectory per guest
  std::string qemu_binary = "qemu-system-x86_64";
};

struct MemoryPlacement {
  std::vector<net::SocketAddress> memory_pods;
  net::FabricConfig fabric;
  uint64_t stripe_bytes = 1u << 20;
  uint64_t local_cache_bytes = 0;
};

enum class GuestState { kRunning, kStopped, kFailed };
std::string_view guest_state_name(GuestState state);

struct GuestRuntime {
  std::string name;
  GuestState state = GuestState::kRunning;
  std::string reason;
  int qemu_pid = 0;
  Accel accel = Accel::kTcg;
  std::string run_dir;
  QemuPaths paths;
  std::string ram_file;
};

// A guest on its way from one compute pod to another.
struct GuestTransfer {
  std::string device_state;  // QEMU's, without the RAM
  FileRegions ram;           // the regions the RAM is on
  bool running = true;       // its vCPUs ran when it was sent, and run again after
  // A snapshot's clone: its RAM to fetch in the background before the
  // guest asks (the working set an earlier clone was seen to read), or, for
  // the first clone, how long to record what it reads.
  std::vector<ReadExtent> prefetch;
  std::chrono::milliseconds record_reads{0};
};

struct GuestStats {
  PodfsStats podfs;
  std::vector<pods::MemoryPodStats> memory_pods;
};

class ComputePod {
 public:
  static Result<std::unique_ptr<ComputePod>> start(const ComputePodConfig& config);
  ~ComputePod();  // stops every guest, unmounts, deletes their regions

  const net::SocketAddress& control_address() const;

  Result<GuestRuntime> launch(const GuestSpec& guest, const MemoryPlacement& placement);
  Status stop(const std::string& name);
  Status drop_cache(const std::string& name);
  Result<GuestRuntime> guest(const std::string& name) const;
  std::vector<GuestRuntime> guests() const;
  Result<GuestStats> stats(const std::string& name) const;

  // Moving a guest to another compute pod without copying its RAM.
  // send_guest pauses it, writes its RAM back to the memory pods and saves
  // its device state; it then waits, paused, for finish_send (its QEMU
  // quits and its regions stay for the destination) or cancel_send (it runs
  // on here). receive_guest starts it on the destination from the
  // transfer: on the same regions, its devices as they were, running. A
  // receive that fails leaves the regions as they were.
  Result<GuestTransfer> send_guest(const std::string& name);
  Status finish_send(const std::string& name);
  Status cancel_send(const std::string& name);
  Result<GuestRuntime> receive_guest(const GuestSpec& guest, const MemoryPlacement& placement,
                                     const GuestTransfer& transfer);
  // What a guest received with `record_reads` read of its RAM in that
  // window; kept after the guest ends.
  Result<ReadRecording> working_set(const std::string& name) const;

 private:
  struct Impl;
  explicit ComputePod(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmpod::cpuserver
