#include "vmm_protocol.h"

#include <vmpod/net/message.h>

namespace vmpod::vmm {

namespace {

char* c_str(const std::string& s) { return const_cast<char*>(s.c_str()); }

// Holds everything a VmInfo message points into; never moved.
struct VmInfoMessage {
  explicit VmInfoMessage(const VmRecord& vm)
      : vm_(vm), state_(vm_state_name(vm.state)), runtime_(vm.runtime), guest_(vm.guest) {
    for (const auto& pod : vm_.memory_pods) pods_.push_back(c_str(pod));
    message.name = c_str(vm_.name);
    message.state = c_str(state_);
    message.reason = c_str(vm_.reason);
    message.compute_pod = c_str(vm_.compute_pod);
    message.n_memory_pods = pods_.size();
    message.memory_pods = pods_.data();
    message.runtime = &runtime_.message;
    message.qmp_endpoint = c_str(vm_.qmp_endpoint);
    message.hmp_endpoint = c_str(vm_.hmp_endpoint);
    message.qmp_tcp_endpoint = c_str(vm_.qmp_tcp_endpoint);
    message.snapshot = c_str(vm_.snapshot);
    // (a VM that never got as far as a spec has none to send)
    if (!vm_.guest.kernel.empty() || !vm_.guest.disk.empty()) message.guest = &guest_.message;
  }
  VmInfoMessage(const VmInfoMessage&) = delete;
  VmInfoMessage& operator=(const VmInfoMessage&) = delete;
  Vmpod__Pods__VmInfo message = VMPOD__PODS__VM_INFO__INIT;

 private:
  VmRecord vm_;
  std::string state_;
  cpuserver::RuntimeMessage runtime_;
  cpuserver::GuestSpecMessage guest_;
  std::vector<char*> pods_;
};

// Holds everything a SnapshotInfo message points into; never moved.
struct SnapshotInfoMessage {
  explicit SnapshotInfoMessage(const SnapshotRecord& snapshot) : snapshot_(snapshot) {
    for (const auto& pod : snapshot_.memory_pods) pods_.push_back(c_str(pod));
    message.name = c_str(snapshot_.name);
    message.vm = c_str(snapshot_.vm);
    message.parent = c_str(snapshot_.parent);
    message.device_state_bytes = snapshot_.device_state_bytes;
    message.ram_bytes = snapshot_.ram_bytes;
    message.pages = snapshot_.pages;
    message.n_memory_pods = pods_.size();
    message.memory_pods = pods_.data();
    message.created_unix_ms = snapshot_.created_unix_ms;
    message.clones = snapshot_.clones;
    message.working_set_bytes = snapshot_.working_set_bytes;
  }
  SnapshotInfoMessage(const SnapshotInfoMessage&) = delete;
  SnapshotInfoMessage& operator=(const SnapshotInfoMessage&) = delete;
  Vmpod__Pods__SnapshotInfo message = VMPOD__PODS__SNAPSHOT_INFO__INIT;

 private:
  SnapshotRecord snapshot_;
  std::vector<char*> pods_;
};

}  // namespace

PodEntryMessage::PodEntryMessage(const PodRecord& pod)
    : pod_(pod), kind_(pod_kind_name(pod.kind)), control_(pod.control.to_string()) {
  message.pod_id = c_str(pod_.pod_id);
  message.kind = c_str(kind_);
  message.control = c_str(control_);
  message.healthy = pod_.healthy;
  message.reason = c_str(pod_.reason);
}

Result<PodRecord> pod_from(const Vmpod__Pods__PodEntry* message) {
  if (message == nullptr) return fail(ErrorCode::kInvalidArgument, "missing pod");
  PodRecord pod;
  pod.pod_id = message->pod_id;
  auto kind = parse_pod_kind(message->kind);
  if (!kind) return fail(kind.error());
  pod.kind = *kind;
  auto control = net::parse_socket_address(message->control);
  if (!control) return fail(control.error());
  pod.control = *control;
  pod.healthy = message->healthy;
  pod.reason = message->reason;
  return pod;
}

std::string pack_pod_list(const std::vector<PodRecord>& pods) {
  std::deque<PodEntryMessage> messages;
  std::vector<Vmpod__Pods__PodEntry*> pointers;
  for (const auto& pod : pods) pointers.push_back(&messages.emplace_back(pod).message);
  Vmpod__Pods__PodList list = VMPOD__PODS__POD_LIST__INIT;
  list.n_pods = pointers.size();
  list.pods = pointers.data();
  return net::pack_message(list.base);
}

std::string pack_create_vm(const VmRequest& request) {
  cpuserver::GuestSpecMessage guest(request.guest);
  std::string provider(net::fabric_provider_name(request.provider));
  Vmpod__Pods__CreateVmRequest message = VMPOD__PODS__CREATE_VM_REQUEST__INIT;
  message.guest = &guest.message;
  message.memory_pod_count = request.memory_pod_count;
  message.stripe_bytes = request.stripe_bytes;
  message.local_cache_bytes = request.local_cache_bytes;
  message.provider = provider.data();
  message.compute_pod = c_str(request.compute_pod);
  message.qmp_tcp = c_str(request.qmp_tcp);
  return net::pack_message(message.base);
}

Result<VmRequest> create_vm_from(std::string_view body) {
  auto message = net::unpack<Vmpod__Pods__CreateVmRequest>(vmpod__pods__create_vm_request__descriptor, body);
  if (!message) return fail(message.error());
  VmRequest request;
  auto guest = cpuserver::guest_spec_from((*message)->guest);
  if (!guest) return fail(guest.error());
  request.guest = *guest;
  request.memory_pod_count = (*message)->memory_pod_count;
  if ((*message)->stripe_bytes != 0) request.stripe_bytes = (*message)->stripe_bytes;
  request.local_cache_bytes = (*message)->local_cache_bytes;
  auto provider = net::parse_fabric_provider((*message)->provider[0] ? (*message)->provider : "tcp");
  if (!provider) return fail(provider.error());
  request.provider = *provider;
  request.compute_pod = (*message)->compute_pod;
  request.qmp_tcp = (*message)->qmp_tcp;
  return request;
}

std::string pack_vm_list(const std::vector<VmRecord>& vms) {
  std::deque<VmInfoMessage> messages;
  std::vector<Vmpod__Pods__VmInfo*> pointers;
  for (const auto& vm : vms) pointers.push_back(&messages.emplace_back(vm).message);
  Vmpod__Pods__VmList list = VMPOD__PODS__VM_LIST__INIT;
  list.n_vms = pointers.size();
  list.vms = pointers.data();
  return net::pack_message(list.base);
}

Result<std::vector<VmRecord>> vm_list_from(std::string_view body) {
  auto message = net::unpack<Vmpod__Pods__VmList>(vmpod__pods__vm_list__descriptor, body);
  if (!message) return fail(message.error());
  std::vector<VmRecord> out;
  for (size_t i = 0; i < (*message)->n_vms; ++i) {
    const Vmpod__Pods__VmInfo* info = (*message)->vms[i];
    VmRecord vm;
    vm.name = info->name;
    auto state = parse_vm_state(info->state);
    if (!state) return fail(state.error());
    vm.state = *state;
    vm.reason = info->reason;
    vm.compute_pod = info->compute_pod;
    vm.qmp_endpoint = info->qmp_endpoint;
    vm.hmp_endpoint = info->hmp_endpoint;
    vm.qmp_tcp_endpoint = info->qmp_tcp_endpoint;
    vm.snapshot = info->snapshot;
    for (size_t j = 0; j < info->n_memory_pods; ++j) vm.memory_pods.push_back(info->memory_pods[j]);
    if (info->runtime != nullptr) {
      auto runtime = cpuserver::runtime_from(info->runtime);
      if (!runtime) return fail(runtime.error());
      vm.runtime = *runtime;
    }
    if (info->guest != nullptr) {
      auto guest = cpuserver::guest_spec_from(info->guest);
      if (!guest) return fail(guest.error());
      vm.guest = *guest;
    }
    out.push_back(std::move(vm));
  }
  return out;
}

std::string pack_migration(const MigrationReport& report) {
  VmInfoMessage vm(report.vm);
  Vmpod__Pods__MigrateVmReply reply = VMPOD__PODS__MIGRATE_VM_REPLY__INIT;
  reply.vm = &vm.message;
  reply.downtime_us = static_cast<uint64_t>(report.downtime.count());
  reply.total_us = static_cast<uint64_t>(report.total.count());
  return net::pack_message(reply.base);
}

Result<MigrationReport> migration_from(std::string_view body) {
  auto reply = net::unpack<Vmpod__Pods__MigrateVmReply>(vmpod__pods__migrate_vm_reply__descriptor, body);
  if (!reply) return fail(reply.error());
  if ((*reply)->vm == nullptr) return fail(ErrorCode::kInvalidArgument, "a migration reply without its vm");
  Vmpod__Pods__VmInfo* info = (*reply)->vm;
  Vmpod__Pods__VmList list = VMPOD__PODS__VM_LIST__INIT;
  list.n_vms = 1;
  list.vms = &info;
  auto vms = vm_list_from(net::pack_message(list.base));
  if (!vms) return fail(vms.error());
  return MigrationReport{vms->front(), std::chrono::microseconds((*reply)->downtime_us),
                         std::chrono::microseconds((*reply)->total_us)};
}

std::string pack_snapshot_list(const std::vector<SnapshotRecord>& snapshots) {
  std::deque<SnapshotInfoMessage> messages;
  std::vector<Vmpod__Pods__SnapshotInfo*> pointers;
  for (const auto& snapshot : snapshots) pointers.push_back(&messages.emplace_back(snapshot).message);
  Vmpod__Pods__SnapshotList list = VMPOD__PODS__SNAPSHOT_LIST__INIT;
  list.n_snapshots = pointers.size();
  list.snapshots = pointers.data();
  return net::pack_message(list.base);
}

Result<std::vector<SnapshotRecord>> snapshot_list_from(std::string_view body) {
  auto message = net::unpack<Vmpod__Pods__SnapshotList>(vmpod__pods__snapshot_list__descriptor, body);
  if (!message) return fail(message.error());
  std::vector<SnapshotRecord> out;
  for (size_t i = 0; i < (*message)->n_snapshots; ++i) {
    const Vmpod__Pods__SnapshotInfo* info = (*message)->snapshots[i];
    SnapshotRecord snapshot;
    snapshot.name = info->name;
    snapshot.vm = info->vm;
    snapshot.parent = info->parent;
    snapshot.device_state_bytes = info->device_state_bytes;
    snapshot.ram_bytes = info->ram_bytes;
    snapshot.pages = info->pages;
    for (size_t j = 0; j < info->n_memory_pods; ++j) snapshot.memory_pods.push_back(info->memory_pods[j]);
    snapshot.created_unix_ms = info->created_unix_ms;
    snapshot.clones = info->clones;
    snapshot.working_set_bytes = info->working_set_bytes;
    out.push_back(std::move(snapshot));
  }
  return out;
}

std::string pack_fork_request(const ForkRequest& request) {
  Vmpod__Pods__ForkSnapshotRequest message = VMPOD__PODS__FORK_SNAPSHOT_REQUEST__INIT;
  message.snapshot = c_str(request.snapshot);
  message.count = request.count;
  message.name_prefix = c_str(request.name_prefix);
  message.compute_pod = c_str(request.compute_pod);
  message.paused = request.paused;
  message.no_prefetch = !request.prefetch;
  message.code_disk = c_str(request.code_disk);
  return net::pack_message(message.base);
}

Result<ForkRequest> fork_request_from(std::string_view body) {
  auto message = net::unpack<Vmpod__Pods__ForkSnapshotRequest>(vmpod__pods__fork_snapshot_request__descriptor, body);
  if (!message) return fail(message.error());
  ForkRequest request;
  request.snapshot = (*message)->snapshot;
  request.count = (*message)->count;
  request.name_prefix = (*message)->name_prefix;
  request.compute_pod = (*message)->compute_pod;
  request.paused = (*message)->paused;
  request.prefetch = !(*message)->no_prefetch;
  request.code_disk = (*message)->code_disk;
  return request;
}

}  // namespace vmpod::vmm
