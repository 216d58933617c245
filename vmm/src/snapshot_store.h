// The vmm's snapshots: for each, QEMU's device state (a file in the store's
// directory, a few hundred KiB), the frozen region versions on the memory
// pods, and how the guest was launched, so that forks start it again. The
// store owns the versions: it releases them when a snapshot is deleted and
// when the vmm stops, since nothing else could name them afterwards.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/pods/region_control.h>
#include <vmpod/vmm/vmm.h>

namespace vmpod::vmm {

// Runs `call` against a memory pod's region calls, by pod id, one control
// call at a time per pod; kUnavailable if the pod is not connected.
using MemoryPodCalls =
    std::function<Status(const std::string& pod_id, const std::function<Status(pods::RegionControl&)>& call)>;

// How a snapshot's guest was launched, and what it froze.
struct Snapshot {
  SnapshotRecord record;
  cpuserver::GuestSpec guest;
  cpuserver::MemoryPlacement placement;
  std::vector<pods::VersionHandle> versions;  // one per memory pod, in stripe order
  std::string device_state_path;
  // What clones read first, once a clone has recorded it; until then the
  // clone that records it (empty: none yet).
  std::optional<std::vector<cpuserver::ReadExtent>> working_set;
  std::string recorder;
};

class SnapshotStore {
 public:
  SnapshotStore(std::string dir, MemoryPodCalls calls) : dir_(std::move(dir)), calls_(std::move(calls)) {}
  ~SnapshotStore();  // releases every version still held
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // kAlreadyExists if the name is taken, kInvalidArgument if it cannot name
  // a file; checked before a VM is paused for it.
  Status check_new_name(const std::string& name) const;
  // Freezes the regions of a guest that send_guest() saved (paused, its RAM
  // written back) and keeps its device state. On failure every version it
  // froze is released again.
  Result<SnapshotRecord> take(SnapshotRecord record, const cpuserver::GuestSpec& guest,
                              const cpuserver::MemoryPlacement& placement,
                              const cpuserver::GuestTransfer& sent);
  Result<Snapshot> find(const std::string& name) const;
  std::vector<SnapshotRecord> list() const;
  Status remove(const std::string& name);

  // New copy-on-write regions over the snapshot's versions, one per memory
  // pod, and its device state: what a compute pod's receive_guest() starts
  // a clone from. On failure the regions already forked are deleted.
  Result<cpuserver::GuestTransfer> fork(const Snapshot& snapshot, const std::string& owner, bool running);
  // The first clone records what it reads; what it recorded is the
  // working set that later clones prefetch.
  void set_recorder(const std::string& name, const std::string& vm);
  void set_working_set(const std::string& name, std::optional<std::vector<cpuserver::ReadExtent>> extents);
  // Deletes a clone's regions that no compute pod took over.
  void delete_regions(const Snapshot& snapshot, const cpuserver::FileRegions& regions);

 private:
  void release(const std::vector<std::string>& pods, const std::vector<pods::VersionHandle>& versions);

  const std::string dir_;
  const MemoryPodCalls calls_;
  mutable std::mutex mutex_;
  std::map<std::string, Snapshot> snapshots_;
};

}  // namespace vmpod::vmm
