// The vmm: knows its pods, composes a VM from one compute pod and N memory
// pods, starts and stops it, and tracks its state. Every front end (the
// control socket, the CLI, later QMP and libvirt) drives these calls.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/net/fabric.h>
#include <vmpod/net/socket.h>
#include <vmpod/vmm/vm_state.h>

namespace vmpod::vmm {

enum class PodKind { kMemory, kCompute };
std::string_view pod_kind_name(PodKind kind);
Result<PodKind> parse_pod_kind(std::string_view name);

struct PodRecord {
  std::string pod_id;  // filled from the pod itself when registered
  PodKind kind = PodKind::kMemory;
  net::SocketAddress control;
  bool healthy = true;
  std::string reason;  // why it is not healthy
};

struct VmRequest {
  cpuserver::GuestSpec guest;
  unsigned memory_pod_count = 0;  // 0: every healthy memory pod
  uint64_t stripe_bytes = 1u << 20;
  uint64_t local_cache_bytes = 0;
  net::FabricProvider provider = net::FabricProvider::kTcp;
  std::string compute_pod;  // empty: the vmm chooses
  // Also serve the VM's QMP on this TCP address ("127.0.0.1:0" for any
  // free port); empty: the unix socket only.
  std::string qmp_tcp;
};

struct VmRecord {
  std::string name;
  VmState state = VmState::kDefined;
  std::string reason;
  std::string compute_pod;
  std::vector<std::string> memory_pods;
  cpuserver::GuestRuntime runtime;
  std::string qmp_endpoint;  // the VM's QMP socket, which outlives its QEMU
  std::string hmp_endpoint;  // its HMP text socket, likewise
  std::string qmp_tcp_endpoint;  // "tcp:HOST:PORT" when asked for, else empty
  std::string snapshot;  // the snapshot it was forked from, if any
  cpuserver::GuestSpec guest;  // what its QEMU runs, with its identity
};

// How a migration went: the VM where it is now, and the time its vCPUs did
// not run (from the source's pause to the destination's resume) within the
// whole move.
struct MigrationReport {
  VmRecord vm;
  std::chrono::microseconds downtime{0};
  std::chrono::microseconds total{0};
};

// A snapshot: a VM's device state, saved by QEMU without its RAM, and
// frozen versions of the VM's regions on its memory pods. Forks of it are
// new VMs on copy-on-write regions over those versions.
struct SnapshotRecord {
  std::string name;
  std::string vm;        // the VM it was taken of
  std::string parent;    // the snapshot that VM was forked from, if any
  uint64_t device_state_bytes = 0;
  uint64_t ram_bytes = 0;
  uint64_t pages = 0;    // held by the frozen versions themselves, over all memory pods
  std::vector<std::string> memory_pods;  // where the versions are, in stripe order
  int64_t created_unix_ms = 0;
  unsigned clones = 0;   // live VMs forked from it
  // RAM its first clone read in its first seconds, which later clones
  // prefetch; 0 until a fork after that clone's recording collected it.
  uint64_t working_set_bytes = 0;
};

struct ForkRequest {
  std::string snapshot;
  unsigned count = 1;
  // Clones are PREFIX-N with the lowest N not taken; empty: the snapshot's name.
  std::string name_prefix;
  std::string compute_pod;  // empty: the vmm chooses, per clone
  bool paused = false;      // the clones' vCPUs wait for `cont`
  // Fetch the snapshot's working set ahead of each clone (see SnapshotRecord).
  bool prefetch = true;
  // The clones' code disk instead of the snapshot's (which must have one).
  std::string code_disk;
};

struct VmEvent {
  std::string vm;
  VmState from;
  VmState to;
  std::string reason;
};

struct VmmConfig {
  net::SocketAddress control;
  std::string run_dir = "/run/vmpod/vmm";  // the VMs' QMP and HMP sockets
  std::vector<PodRecord> pods;  // registered at start
};

class Vmm {
 public:
  static Result<std::unique_ptr<Vmm>> start(const VmmConfig& config);
  ~Vmm();  // stops every VM it started

  const net::SocketAddress& control_address() const;

  Result<PodRecord> register_pod(const PodRecord& pod);
  std::vector<PodRecord> pods() const;

  Result<VmRecord> create_vm(const VmRequest& request);
  Status stop_vm(const std::string& name);
  // Forgets a stopped or failed VM: its QMP and HMP endpoints close and
  // its name is free. kWrongState while a QEMU runs for it.
  Status remove_vm(const std::string& name);
  // A fresh QEMU for the VM on the same pods; its QMP endpoint stays and
  // its clients see X_VMPOD_BACKEND_CHANGED.
  Result<VmRecord> restart_vm(const std::string& name);
  // Moves a running or paused VM to another compute pod without copying
  // its RAM: its QEMU's device state moves, its regions stay. The QMP
  // endpoint stays; its clients see X_VMPOD_BACKEND_CHANGED. If any step
  // fails, the VM goes on where it was.
  Result<MigrationReport> migrate_vm(const std::string& name, const std::string& to_compute_pod);
  // Pauses the VM, writes its dirty pages back, saves its device state and
  // freezes its regions; it then runs on (or stays paused when asked).
  Result<SnapshotRecord> snapshot_vm(const std::string& name, const std::string& snapshot, bool stay_paused);
  // Starts the clones one after another; each runs once its fork returns.
  // A clone that fails to start leaves nothing behind, and the clones
  // already started keep running.
  Result<std::vector<VmRecord>> fork_snapshot(const ForkRequest& request);
  std::vector<SnapshotRecord> snapshots() const;
  Result<SnapshotRecord> snapshot(const std::string& name) const;
  // Releases the snapshot's versions: their pages go back to the memory
  // pods once no clone reads through them.
  Status delete_snapshot(const std::string& name);
  Status drop_cache(const std::string& name);
  Result<VmRecord> vm(const std::string& name) const;
  std::vector<VmRecord> vms() const;
  Result<cpuserver::GuestStats> vm_stats(const std::string& name);

  // Called on every state change, from the vmm's threads.
  void on_event(std::function<void(const VmEvent&)> listener);

 private:
  struct Impl;
  explicit Vmm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The vmm's control socket from a tool's side.
class VmmClient {
 public:
  static Result<std::unique_ptr<VmmClient>> connect(const net::SocketAddress& control,
                                                    std::chrono::milliseconds timeout);

  Result<PodRecord> register_pod(const PodRecord& pod);
  Result<std::vector<PodRecord>> pods();
  Result<VmRecord> create_vm(const VmRequest& request);
  Status stop_vm(const std::string& name);
  Status remove_vm(const std::string& name);
  Result<VmRecord> restart_vm(const std::string& name);
  Result<MigrationReport> migrate_vm(const std::string& name, const std::string& to_compute_pod);
  Result<SnapshotRecord> snapshot_vm(const std::string& name, const std::string& snapshot, bool stay_paused);
  Result<std::vector<VmRecord>> fork_snapshot(const ForkRequest& request);
  Result<std::vector<SnapshotRecord>> snapshots();
  Result<SnapshotRecord> snapshot(const std::string& name);
  Status delete_snapshot(const std::string& name);
  Status drop_cache(const std::string& name);
  Result<std::vector<VmRecord>> vms();
  Result<VmRecord> vm(const std::string& name);
  Result<cpuserver::GuestStats> vm_stats(const std::string& name);

 private:
  explicit VmmClient(std::unique_ptr<net::RpcClient> rpc) : rpc_(std::move(rpc)) {}
  std::unique_ptr<net::RpcClient> rpc_;
};

}  // namespace vmpod::vmm
