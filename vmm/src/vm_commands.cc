#include "vm_commands.h"

#include <algorithm>
#include <cstdint>
#include <map>

#include <vmpod/base/histogram.h>

namespace vmpod::vmm {

namespace {

constexpr uint64_t kPageBytes = 4096;

qapi::XVmpodLatency latency_of(const std::vector<uint64_t>& buckets) {
  auto nanoseconds = [&](double quantile) {
    return static_cast<uint64_t>(histogram_quantile_us(buckets, quantile) * 1000.0);
  };
  return {histogram_count(buckets), nanoseconds(0.5), nanoseconds(0.99)};
}

std::optional<std::string> present(const std::string& text) {
  if (text.empty()) return std::nullopt;
  return text;
}

qapi::XVmpodVmInfo vm_info(const VmRecord& vm) {
  return qapi::XVmpodVmInfo{vm.name,         schema_vm_state(vm.state),
                            present(vm.reason), vm.compute_pod,
                            vm.memory_pods,  vm_has_qemu(vm.state) ? vm.runtime.qemu_pid : 0,
                            vm.qmp_endpoint, present(vm.snapshot),
                            present(vm.guest.generation_id), present(vm.guest.mac)};
}

qapi::XVmpodSnapshotInfo snapshot_info(const SnapshotRecord& snapshot) {
  return qapi::XVmpodSnapshotInfo{snapshot.name,        snapshot.vm,          snapshot.device_state_bytes,
                                  snapshot.ram_bytes,   snapshot.pages,       snapshot.memory_pods,
                                  snapshot.created_unix_ms, snapshot.clones,  snapshot.working_set_bytes,
                                  present(snapshot.parent)};
}

}  // namespace

qapi::XVmpodVmState schema_vm_state(VmState state) {
  switch (state) {
    case VmState::kDefined: return qapi::XVmpodVmState::kDefined;
    case VmState::kStarting: return qapi::XVmpodVmState::kStarting;
    case VmState::kRunning: return qapi::XVmpodVmState::kRunning;
    case VmState::kPaused: return qapi::XVmpodVmState::kPaused;
    case VmState::kSnapshotting: return qapi::XVmpodVmState::kSnapshotting;
    case VmState::kMigrating: return qapi::XVmpodVmState::kMigrating;
    case VmState::kStopped: return qapi::XVmpodVmState::kStopped;
    case VmState::kFailed: return qapi::XVmpodVmState::kFailed;
  }
  return qapi::XVmpodVmState::kFailed;
}

Result<std::vector<qapi::XVmpodPodInfo>> VmCommands::x_vmpod_query_pods() {
  auto vm = vmm_.vm(vm_);
  if (!vm) return fail(vm.error());
  std::map<std::string, PodRecord> pods;
  for (auto& pod : vmm_.pods()) pods.emplace(pod.pod_id, pod);
  std::vector<qapi::XVmpodPodInfo> out;
  std::vector<std::string> names{vm->compute_pod};
  names.insert(names.end(), vm->memory_pods.begin(), vm->memory_pods.end());
  for (const std::string& name : names) {
    auto found = pods.find(name);
    if (found == pods.end()) {
      return fail(ErrorCode::kNotFound, "pod '" + name + "' of vm '" + vm_ + "' is no longer registered");
    }
    const PodRecord& pod = found->second;
    out.push_back({pod.pod_id,
                   pod.kind == PodKind::kCompute ? qapi::XVmpodPodKind::kCompute : qapi::XVmpodPodKind::kMemory,
                   pod.control.to_string(), pod.healthy, pod.healthy ? std::nullopt : present(pod.reason)});
  }
  return out;
}

Result<std::vector<qapi::XVmpodMemoryTierInfo>> VmCommands::x_vmpod_query_memory() {
  auto vm = vmm_.vm(vm_);
  if (!vm) return fail(vm.error());
  auto stats = vmm_.vm_stats(vm_);
  if (!stats) return fail(stats.error());
  const cpuserver::PodfsStats& cache = stats->podfs;
  std::vector<qapi::XVmpodMemoryTierInfo> out;
  out.push_back({qapi::XVmpodMemoryTier::kLocalCache, vm->compute_pod, cache.cached_bytes / kPageBytes,
                 cache.cached_bytes, cache.reads, cache.writes, latency_of(cache.read_latency), std::nullopt,
                 std::nullopt});
  for (const pods::MemoryPodStats& pod : stats->memory_pods) {
    out.push_back({qapi::XVmpodMemoryTier::kMemoryPod, pod.pod_id, pod.region_pages, pod.region_pages * kPageBytes,
                   pod.reads, pod.writes, latency_of(pod.read_latency), pod.pages_held, pod.capacity_pages});
  }
  return out;
}

Result<qapi::XVmpodCacheInfo> VmCommands::x_vmpod_query_cache() {
  auto stats = vmm_.vm_stats(vm_);
  if (!stats) return fail(stats.error());
  const cpuserver::PodfsStats& cache = stats->podfs;
  return qapi::XVmpodCacheInfo{cache.cache_limit,  cache.cached_bytes,  cache.reads,
                               cache.bytes_read,   cache.zero_reads,    cache.evictions,
                               cache.bytes_evicted, cache.writes,       cache.bytes_written,
                               cache.io_errors};
}

Result<qapi::XVmpodVmInfo> VmCommands::x_vmpod_query_vm() {
  auto vm = vmm_.vm(vm_);
  if (!vm) return fail(vm.error());
  return vm_info(*vm);
}

Status VmCommands::x_vmpod_migrate(const qapi::XVmpodMigrateArguments& arguments) {
  auto migrated = vmm_.migrate_vm(vm_, arguments.to);
  if (!migrated) return fail(migrated.error());
  return {};
}

Result<qapi::XVmpodSnapshotInfo> VmCommands::x_vmpod_snapshot(const qapi::XVmpodSnapshotArguments& arguments) {
  auto taken = vmm_.snapshot_vm(vm_, arguments.name, arguments.paused.value_or(false));
  if (!taken) return fail(taken.error());
  return snapshot_info(*taken);
}

Result<std::vector<qapi::XVmpodSnapshotInfo>> VmCommands::x_vmpod_query_snapshots() {
  std::vector<qapi::XVmpodSnapshotInfo> out;
  for (const SnapshotRecord& snapshot : vmm_.snapshots()) out.push_back(snapshot_info(snapshot));
  return out;
}

Status VmCommands::x_vmpod_delete_snapshot(const qapi::XVmpodDeleteSnapshotArguments& arguments) {
  return vmm_.delete_snapshot(arguments.name);
}

Result<std::vector<qapi::XVmpodVmInfo>> VmCommands::x_vmpod_fork(const qapi::XVmpodForkArguments& arguments) {
  const int64_t count = arguments.count.value_or(1);
  if (count < 1) return fail(ErrorCode::kInvalidArgument, "Parameter 'count' expects a positive number");
  ForkRequest request;
  request.snapshot = arguments.snapshot;
  request.count = static_cast<unsigned>(std::min<int64_t>(count, UINT32_MAX));
  request.name_prefix = arguments.name_prefix.value_or("");
  request.compute_pod = arguments.compute_pod.value_or("");
  request.paused = arguments.paused.value_or(false);
  request.prefetch = arguments.prefetch.value_or(true);
  request.code_disk = arguments.code_disk.value_or("");
  auto clones = vmm_.fork_snapshot(request);
  if (!clones) return fail(clones.error());
  std::vector<qapi::XVmpodVmInfo> out;
  for (const VmRecord& clone : *clones) out.push_back(vm_info(clone));
  return out;
}

}  // namespace vmpod::vmm
