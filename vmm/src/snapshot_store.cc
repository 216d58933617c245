#include "snapshot_store.h"

#include <cctype>
#include <filesystem>

#include <spdlog/spdlog.h>

#include <vmpod/base/file.h>

namespace vmpod::vmm {

namespace {

constexpr size_t kMaxNameLength = 64;

}  // namespace

SnapshotStore::~SnapshotStore() {
  for (auto& [name, snapshot] : snapshots_) release(snapshot.record.memory_pods, snapshot.versions);
}

Status SnapshotStore::check_new_name(const std::string& name) const {
  bool file_safe = !name.empty() && name.size() <= kMaxNameLength && name[0] != '.' && name[0] != '-';
  for (char c : name) file_safe = file_safe && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.');
  if (!file_safe) {
    return fail(ErrorCode::kInvalidArgument, "snapshot name '" + name +
                                                 "' must be 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'");
  }
  std::lock_guard lock(mutex_);
  if (snapshots_.count(name)) return fail(ErrorCode::kAlreadyExists, "snapshot '" + name + "' exists");
  return {};
}

void SnapshotStore::release(const std::vector<std::string>& pods, const std::vector<pods::VersionHandle>& versions) {
  for (size_t i = 0; i < versions.size(); ++i) {
    Status released = calls_(pods[i], [&](pods::RegionControl& pod) { return pod.release_version(versions[i]); });
    if (!released) spdlog::warn("snapshot: releasing version {} on {}: {}", versions[i].id, pods[i], released.error().to_string());
  }
}

Result<SnapshotRecord> SnapshotStore::take(SnapshotRecord record, const cpuserver::GuestSpec& guest,
                                           const cpuserver::MemoryPlacement& placement,
                                           const cpuserver::GuestTransfer& sent) {
  VMPOD_TRY_CTX(check_new_name(record.name), "snapshot");
  if (sent.ram.regions.size() != record.memory_pods.size()) {
    return fail(ErrorCode::kInternal, "snapshot " + record.name + ": " + std::to_string(sent.ram.regions.size()) +
                                          " regions for " + std::to_string(record.memory_pods.size()) + " memory pods");
  }
  Snapshot snapshot{record, guest, placement, {}, dir_ + "/" + record.name + ".state", std::nullopt, ""};
  auto undo = [&](const Error& error) -> Error {
    release(record.memory_pods, snapshot.versions);
    std::error_code ec;
    std::filesystem::remove(snapshot.device_state_path, ec);
    return error.context("snapshot " + record.name);
  };
  for (size_t i = 0; i < sent.ram.regions.size(); ++i) {
    Status frozen = calls_(record.memory_pods[i], [&](pods::RegionControl& pod) -> Status {
      auto version = pod.freeze_region(sent.ram.regions[i]);
      if (!version) return fail(version.error());
      snapshot.versions.push_back(version->version);
      snapshot.record.pages += version->pages;
      return {};
    });
    if (!frozen) return fail(undo(frozen.error().context("memory pod " + record.memory_pods[i])));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return fail(undo(Error(ErrorCode::kInternal, "cannot create " + dir_ + ": " + ec.message())));
  if (auto written = write_file_atomically(snapshot.device_state_path, sent.device_state); !written) {
    return fail(undo(written.error()));
  }
  snapshot.record.device_state_bytes = sent.device_state.size();
  snapshot.record.ram_bytes = sent.ram.size;
  std::lock_guard lock(mutex_);
  if (!snapshots_.emplace(record.name, snapshot).second) {
    return fail(undo(Error(ErrorCode::kAlreadyExists, "taken meanwhile")));
  }
  return snapshot.record;
}

Result<Snapshot> SnapshotStore::find(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = snapshots_.find(name);
  if (it == snapshots_.end()) return fail(ErrorCode::kNotFound, "no snapshot named '" + name + "'");
  return it->second;
}

std::vector<SnapshotRecord> SnapshotStore::list() const {
  std::lock_guard lock(mutex_);
  std::vector<SnapshotRecord> out;
  for (const auto& [name, snapshot] : snapshots_) out.push_back(snapshot.record);
  return out;
}

Status SnapshotStore::remove(const std::string& name) {
  Snapshot snapshot;
  {
    std::lock_guard lock(mutex_);
    auto it = snapshots_.find(name);
    if (it == snapshots_.end()) return fail(ErrorCode::kNotFound, "no snapshot named '" + name + "'");
    snapshot = std::move(it->second);
    snapshots_.erase(it);
  }
  release(snapshot.record.memory_pods, snapshot.versions);
  std::error_code ec;
  std::filesystem::remove(snapshot.device_state_path, ec);
  spdlog::info("snapshot {} deleted", name);
  return {};
}

Result<cpuserver::GuestTransfer> SnapshotStore::fork(const Snapshot& snapshot, const std::string& owner,
                                                     bool running) {
  cpuserver::GuestTransfer transfer;
  transfer.running = running;
  transfer.ram.size = snapshot.record.ram_bytes;
  auto state = read_file(snapshot.device_state_path);
  if (!state) return fail(state.error().context("snapshot " + snapshot.record.name));
  transfer.device_state = std::move(*state);
  for (size_t i = 0; i < snapshot.versions.size(); ++i) {
    const std::string& pod_id = snapshot.record.memory_pods[i];
    Status forked = calls_(pod_id, [&](pods::RegionControl& pod) -> Status {
      auto region = pod.fork_region(snapshot.versions[i], owner);
      if (!region) return fail(region.error());
      transfer.ram.regions.push_back(*region);
      return {};
    });
    if (!forked) {
      delete_regions(snapshot, transfer.ram);
      return fail(forked.error().context("forking snapshot " + snapshot.record.name + " on " + pod_id));
    }
  }
  return transfer;
}

void SnapshotStore::set_recorder(const std::string& name, const std::string& vm) {
  std::lock_guard lock(mutex_);
  auto it = snapshots_.find(name);
  if (it != snapshots_.end()) it->second.recorder = vm;
}

void SnapshotStore::set_working_set(const std::string& name,
                                    std::optional<std::vector<cpuserver::ReadExtent>> extents) {
  std::lock_guard lock(mutex_);
  auto it = snapshots_.find(name);
  if (it == snapshots_.end()) return;
  it->second.record.working_set_bytes = 0;
  if (extents) {
    for (const auto& extent : *extents) it->second.record.working_set_bytes += extent.length;
  }
  it->second.working_set = std::move(extents);
  if (!it->second.working_set) it->second.recorder.clear();
}

void SnapshotStore::delete_regions(const Snapshot& snapshot, const cpuserver::FileRegions& regions) {
  for (size_t i = 0; i < regions.regions.size(); ++i) {
    const std::string& pod_id = snapshot.record.memory_pods[i];
    Status deleted = calls_(pod_id, [&](pods::RegionControl& pod) { return pod.delete_region(regions.regions[i]); });
    if (!deleted) spdlog::warn("snapshot {}: deleting region {} on {}: {}", snapshot.record.name, regions.regions[i].id,
                               pod_id, deleted.error().to_string());
  }
}

}  // namespace vmpod::vmm
