#include <vmpod/cpuserver/compute_protocol.h>

#include <algorithm>
#include <deque>

#include <vmpod/cpuserver/guest_identity.h>
#include <vmpod/net/message.h>

namespace vmpod::cpuserver {

namespace {

char* c_str(const std::string& s) { return const_cast<char*>(s.c_str()); }

}  // namespace

GuestSpecMessage::GuestSpecMessage(const GuestSpec& spec)
    : spec_(spec), accel_(accel_name(spec.accel)) {
  message.name = c_str(spec_.name);
  message.memory_bytes = spec_.memory_bytes;
  message.cpus = spec_.cpus;
  message.machine = c_str(spec_.machine);
  message.accel = c_str(accel_);
  message.kernel = c_str(spec_.kernel);
  message.initrd = c_str(spec_.initrd);
  message.append = c_str(spec_.append);
  message.disk = c_str(spec_.disk);
  message.code_disk = c_str(spec_.code_disk);
  message.generation_id = c_str(spec_.generation_id);
  message.mac = c_str(spec_.mac);
}

Result<GuestSpec> guest_spec_from(const Vmpod__Pods__GuestSpec* message) {
  if (message == nullptr) return fail(ErrorCode::kInvalidArgument, "missing guest");
  GuestSpec spec;
  spec.name = message->name;
  if (spec.name.empty() || spec.name.find('/') != std::string::npos || spec.name[0] == '.') {
    return fail(ErrorCode::kInvalidArgument, "bad guest name '" + spec.name + "'");
  }
  spec.memory_bytes = message->memory_bytes;
  if (spec.memory_bytes < (16ull << 20) || spec.memory_bytes % (1ull << 20) != 0) {
    return fail(ErrorCode::kInvalidArgument, "guest memory must be a whole number of MiB, at least 16");
  }
  spec.cpus = message->cpus == 0 ? 1 : message->cpus;
  spec.machine = message->machine[0] ? message->machine : "q35";
  auto accel = parse_accel(message->accel[0] ? message->accel : "auto");
  if (!accel) return fail(accel.error());
  spec.accel = *accel;
  spec.kernel = message->kernel;
  spec.initrd = message->initrd;
  spec.append = message->append;
  spec.disk = message->disk;
  if (spec.kernel.empty() && spec.disk.empty()) {
    return fail(ErrorCode::kInvalidArgument, "a guest needs a kernel or a disk");
  }
  spec.code_disk = message->code_disk;
  spec.generation_id = message->generation_id;
  if (!spec.generation_id.empty()) {
    if (auto ok = check_generation_id(spec.generation_id); !ok) return fail(ok.error());
  }
  spec.mac = message->mac;
  if (!spec.mac.empty()) {
    if (auto ok = check_mac(spec.mac); !ok) return fail(ok.error());
  }
  return spec;
}

PlacementMessage::PlacementMessage(const MemoryPlacement& placement)
    : provider_(net::fabric_provider_name(placement.fabric.provider)) {
  for (const auto& address : placement.memory_pods) pods_.push_back(address.to_string());
  for (auto& pod : pods_) pod_pointers_.push_back(pod.data());
  message.n_memory_pods = pod_pointers_.size();
  message.memory_pods = pod_pointers_.data();
  message.provider = provider_.data();
  message.stripe_bytes = placement.stripe_bytes;
  message.local_cache_bytes = placement.local_cache_bytes;
}

Result<MemoryPlacement> placement_from(const Vmpod__Pods__MemoryPlacement* message) {
  if (message == nullptr || message->n_memory_pods == 0) {
    return fail(ErrorCode::kInvalidArgument, "a guest needs at least one memory pod");
  }
  MemoryPlacement placement;
  for (size_t i = 0; i < message->n_memory_pods; ++i) {
    auto address = net::parse_socket_address(message->memory_pods[i]);
    if (!address) return fail(address.error());
    placement.memory_pods.push_back(*address);
  }
  auto provider = net::parse_fabric_provider(message->provider[0] ? message->provider : "tcp");
  if (!provider) return fail(provider.error());
  placement.fabric.provider = *provider;
  if (message->stripe_bytes != 0) placement.stripe_bytes = message->stripe_bytes;
  placement.local_cache_bytes = message->local_cache_bytes;
  return placement;
}

TransferMessage::TransferMessage(const GuestTransfer& transfer) : transfer_(transfer) {
  for (auto& region : transfer_.ram.regions) {
    Vmpod__Pods__RegionRef ref = VMPOD__PODS__REGION_REF__INIT;
    ref.region_id = region.id;
    ref.token = {region.token.size(), region.token.data()};
    refs_.push_back(ref);
  }
  for (auto& ref : refs_) ref_pointers_.push_back(&ref);
  message.device_state = {transfer_.device_state.size(),
                          reinterpret_cast<uint8_t*>(transfer_.device_state.data())};
  message.ram_size = transfer_.ram.size;
  message.running = transfer_.running;
  message.n_regions = ref_pointers_.size();
  message.regions = ref_pointers_.data();
  for (const ReadExtent& extent : transfer_.prefetch) {
    Vmpod__Pods__ReadExtent entry = VMPOD__PODS__READ_EXTENT__INIT;
    entry.offset = extent.offset;
    entry.length = extent.length;
    extents_.push_back(entry);
  }
  for (auto& extent : extents_) extent_pointers_.push_back(&extent);
  message.n_prefetch = extent_pointers_.size();
  message.prefetch = extent_pointers_.data();
  message.record_reads_ms = static_cast<uint32_t>(transfer_.record_reads.count());
}

Result<GuestTransfer> transfer_from(const Vmpod__Pods__GuestTransfer* message) {
  if (message == nullptr || message->n_regions == 0 || message->device_state.len == 0) {
    return fail(ErrorCode::kInvalidArgument, "a guest transfer needs a device state and regions");
  }
  GuestTransfer transfer;
  transfer.device_state.assign(reinterpret_cast<const char*>(message->device_state.data), message->device_state.len);
  transfer.ram.size = message->ram_size;
  transfer.running = message->running;
  for (size_t i = 0; i < message->n_regions; ++i) {
    const Vmpod__Pods__RegionRef* ref = message->regions[i];
    pods::RegionHandle region;
    if (ref == nullptr || ref->token.len != region.token.size()) {
      return fail(ErrorCode::kInvalidArgument, "a region in a guest transfer has no valid token");
    }
    region.id = ref->region_id;
    std::copy(ref->token.data, ref->token.data + ref->token.len, region.token.begin());
    transfer.ram.regions.push_back(region);
  }
  for (size_t i = 0; i < message->n_prefetch; ++i) {
    if (message->prefetch[i] == nullptr) return fail(ErrorCode::kInvalidArgument, "an empty prefetch extent");
    transfer.prefetch.push_back({message->prefetch[i]->offset, message->prefetch[i]->length});
  }
  transfer.record_reads = std::chrono::milliseconds(message->record_reads_ms);
  return transfer;
}

std::string pack_working_set(const ReadRecording& recording) {
  std::vector<Vmpod__Pods__ReadExtent> extents;
  for (const ReadExtent& extent : recording.extents) {
    Vmpod__Pods__ReadExtent entry = VMPOD__PODS__READ_EXTENT__INIT;
    entry.offset = extent.offset;
    entry.length = extent.length;
    extents.push_back(entry);
  }
  std::vector<Vmpod__Pods__ReadExtent*> pointers;
  for (auto& extent : extents) pointers.push_back(&extent);
  Vmpod__Pods__WorkingSet message = VMPOD__PODS__WORKING_SET__INIT;
  message.n_extents = pointers.size();
  message.extents = pointers.data();
  message.done = recording.done;
  return net::pack_message(message.base);
}

Result<ReadRecording> working_set_from(std::string_view body) {
  auto message = net::unpack<Vmpod__Pods__WorkingSet>(vmpod__pods__working_set__descriptor, body);
  if (!message) return fail(message.error());
  ReadRecording recording;
  for (size_t i = 0; i < (*message)->n_extents; ++i) {
    if ((*message)->extents[i] == nullptr) return fail(ErrorCode::kInvalidArgument, "an empty extent");
    recording.extents.push_back({(*message)->extents[i]->offset, (*message)->extents[i]->length});
  }
  recording.done = (*message)->done;
  return recording;
}

RuntimeMessage::RuntimeMessage(const GuestRuntime& runtime)
    : runtime_(runtime), state_(guest_state_name(runtime.state)), accel_(accel_name(runtime.accel)) {
  message.name = c_str(runtime_.name);
  message.state = c_str(state_);
  message.reason = c_str(runtime_.reason);
  message.qemu_pid = runtime_.qemu_pid;
  message.accel = c_str(accel_);
  message.run_dir = c_str(runtime_.run_dir);
  message.qmp_socket = c_str(runtime_.paths.qmp_socket);
  message.vmm_qmp_socket = c_str(runtime_.paths.vmm_qmp_socket);
  message.serial_socket = c_str(runtime_.paths.serial_socket);
  message.serial_log = c_str(runtime_.paths.serial_log);
  message.agent_socket = c_str(runtime_.paths.agent_socket);
  message.ram_file = c_str(runtime_.ram_file);
}

std::string pack_runtime(const GuestRuntime& runtime) {
  RuntimeMessage message(runtime);
  return net::pack_message(message.message.base);
}

Result<GuestRuntime> runtime_from(const Vmpod__Pods__VmRuntime* message) {
  if (message == nullptr) return fail(ErrorCode::kInternal, "missing guest runtime");
  GuestRuntime runtime;
  runtime.name = message->name;
  std::string_view state = message->state;
  if (state == "running") runtime.state = GuestState::kRunning;
  else if (state == "stopped") runtime.state = GuestState::kStopped;
  else if (state == "failed") runtime.state = GuestState::kFailed;
  else return fail(ErrorCode::kInternal, "unknown guest state '" + std::string(state) + "'");
  runtime.reason = message->reason;
  runtime.qemu_pid = message->qemu_pid;
  auto accel = parse_accel(message->accel);
  runtime.accel = accel ? *accel : Accel::kTcg;
  runtime.run_dir = message->run_dir;
  runtime.paths.qmp_socket = message->qmp_socket;
  runtime.paths.vmm_qmp_socket = message->vmm_qmp_socket;
  runtime.paths.serial_socket = message->serial_socket;
  runtime.paths.serial_log = message->serial_log;
  runtime.paths.agent_socket = message->agent_socket;
  runtime.paths.qemu_log = runtime.run_dir + "/qemu.log";
  runtime.ram_file = message->ram_file;
  return runtime;
}

std::string pack_stats(const std::string& name, const GuestStats& stats) {
  const PodfsStats& p = stats.podfs;
  Vmpod__Pods__LatencyHistogram read_latency = VMPOD__PODS__LATENCY_HISTOGRAM__INIT;
  Vmpod__Pods__LatencyHistogram write_latency = VMPOD__PODS__LATENCY_HISTOGRAM__INIT;
  pods::histogram_message(p.read_latency, read_latency);
  pods::histogram_message(p.write_latency, write_latency);
  Vmpod__Pods__PodfsStats podfs = VMPOD__PODS__PODFS_STATS__INIT;
  podfs.files = p.files;
  podfs.reads = p.reads;
  podfs.bytes_read = p.bytes_read;
  podfs.writes = p.writes;
  podfs.bytes_written = p.bytes_written;
  podfs.zero_reads = p.zero_reads;
  podfs.evictions = p.evictions;
  podfs.bytes_evicted = p.bytes_evicted;
  podfs.cached_bytes = p.cached_bytes;
  podfs.cache_limit = p.cache_limit;
  podfs.io_errors = p.io_errors;
  podfs.read_latency = &read_latency;
  podfs.write_latency = &write_latency;
  podfs.prefetched_bytes = p.prefetched_bytes;
  podfs.prefetch_extents = p.prefetch_extents;
  podfs.prefetch_skipped = p.prefetch_skipped;
  podfs.prefetch_abandoned = p.prefetch_abandoned;

  std::deque<pods::MemStatsMessage> pods;  // never moves what it holds
  std::vector<Vmpod__Pods__MemStatsReply*> pod_ptrs;
  for (const auto& m : stats.memory_pods) pod_ptrs.push_back(&pods.emplace_back(m).message);
  Vmpod__Pods__VmStats message = VMPOD__PODS__VM_STATS__INIT;
  message.name = c_str(name);
  message.podfs = &podfs;
  message.n_memory_pods = pod_ptrs.size();
  message.memory_pods = pod_ptrs.data();
  return net::pack_message(message.base);
}

Result<GuestStats> stats_from(const Vmpod__Pods__VmStats* message) {
  if (message == nullptr || message->podfs == nullptr) {
    return fail(ErrorCode::kInternal, "malformed guest statistics");
  }
  GuestStats stats;
  const Vmpod__Pods__PodfsStats& p = *message->podfs;
  stats.podfs = PodfsStats{p.files, p.reads, p.bytes_read, p.writes, p.bytes_written,
                           p.zero_reads, p.evictions, p.bytes_evicted, p.cached_bytes,
                           p.cache_limit, p.io_errors, pods::histogram_buckets(p.read_latency),
                           pods::histogram_buckets(p.write_latency), p.prefetched_bytes, p.prefetch_extents,
                           p.prefetch_skipped, p.prefetch_abandoned};
  for (size_t i = 0; i < message->n_memory_pods; ++i) {
    stats.memory_pods.push_back(pods::memory_pod_stats_from(*message->memory_pods[i]));
  }
  return stats;
}

}  // namespace vmpod::cpuserver
