#include <algorithm>

#include <vmpod/net/message.h>
#include <vmpod/pods/protocol.h>
#include <vmpod/pods/rpc.h>
#include <vmpod/vmm/vmm.h>

#include "memory.pb-c.h"
#include "vmm_protocol.h"

namespace vmpod::vmm {

using pods::MessageType;

namespace {

// Creating a VM mounts podfs and starts QEMU: it may take a while.
constexpr auto kCallTimeout = std::chrono::seconds(90);

Result<std::string> call(net::RpcClient& rpc, MessageType type, std::string body,
                         std::chrono::milliseconds timeout = kCallTimeout) {
  auto reply = rpc.call(pods::wire(type), std::move(body), timeout);
  if (!reply) return fail(reply.error().context(pods::message_type_name(pods::wire(type))));
  return reply;
}

std::string name_body(const std::string& name) {
  Vmpod__Pods__VmName request = VMPOD__PODS__VM_NAME__INIT;
  request.name = const_cast<char*>(name.c_str());
  return net::pack_message(request.base);
}

Result<std::vector<PodRecord>> pod_list_from(std::string_view body) {
  auto list = net::unpack<Vmpod__Pods__PodList>(vmpod__pods__pod_list__descriptor, body);
  if (!list) return fail(list.error());
  std::vector<PodRecord> out;
  for (size_t i = 0; i < (*list)->n_pods; ++i) {
    auto pod = pod_from((*list)->pods[i]);
    if (!pod) return fail(pod.error());
    out.push_back(*pod);
  }
  return out;
}

template <class T>
Result<T> only(Result<std::vector<T>> list) {
  if (!list) return fail(list.error());
  if (list->size() != 1) return fail(ErrorCode::kInternal, "expected one entry in the reply");
  return list->front();
}

}  // namespace

Result<std::unique_ptr<VmmClient>> VmmClient::connect(const net::SocketAddress& control,
                                                      std::chrono::milliseconds timeout) {
  auto rpc = net::RpcClient::connect(control, timeout);
  if (!rpc) return fail(rpc.error().context("vmm " + control.to_string()));
  return std::unique_ptr<VmmClient>(new VmmClient(std::move(*rpc)));
}

Result<PodRecord> VmmClient::register_pod(const PodRecord& pod) {
  PodEntryMessage entry(pod);
  Vmpod__Pods__RegisterPodRequest request = VMPOD__PODS__REGISTER_POD_REQUEST__INIT;
  request.pod = &entry.message;
  auto reply = call(*rpc_, MessageType::kVmmRegisterPod, net::pack_message(request.base));
  if (!reply) return fail(reply.error());
  return only(pod_list_from(*reply));
}

Result<std::vector<PodRecord>> VmmClient::pods() {
  auto reply = call(*rpc_, MessageType::kVmmListPods, pods::empty_message());
  if (!reply) return fail(reply.error());
  return pod_list_from(*reply);
}

Result<VmRecord> VmmClient::create_vm(const VmRequest& request) {
  auto reply = call(*rpc_, MessageType::kVmmCreateVm, pack_create_vm(request));
  if (!reply) return fail(reply.error());
  return only(vm_list_from(*reply));
}

Status VmmClient::stop_vm(const std::string& name) {
  auto reply = call(*rpc_, MessageType::kVmmStopVm, name_body(name));
  if (!reply) return fail(reply.error());
  return {};
}

Status VmmClient::remove_vm(const std::string& name) {
  auto reply = call(*rpc_, MessageType::kVmmRemoveVm, name_body(name));
  if (!reply) return fail(reply.error());
  return {};
}

Result<VmRecord> VmmClient::restart_vm(const std::string& name) {
  auto reply = call(*rpc_, MessageType::kVmmRestartVm, name_body(name));
  if (!reply) return fail(reply.error());
  return only(vm_list_from(*reply));
}

Result<MigrationReport> VmmClient::migrate_vm(const std::string& name, const std::string& to_compute_pod) {
  Vmpod__Pods__MigrateVmRequest request = VMPOD__PODS__MIGRATE_VM_REQUEST__INIT;
  request.name = const_cast<char*>(name.c_str());
  request.to = const_cast<char*>(to_compute_pod.c_str());
  auto reply = call(*rpc_, MessageType::kVmmMigrateVm, net::pack_message(request.base));
  if (!reply) return fail(reply.error());
  return migration_from(*reply);
}

Result<SnapshotRecord> VmmClient::snapshot_vm(const std::string& name, const std::string& snapshot,
                                              bool stay_paused) {
  Vmpod__Pods__SnapshotVmRequest request = VMPOD__PODS__SNAPSHOT_VM_REQUEST__INIT;
  request.vm = const_cast<char*>(name.c_str());
  request.snapshot = const_cast<char*>(snapshot.c_str());
  request.paused = stay_paused;
  auto reply = call(*rpc_, MessageType::kVmmSnapshotVm, net::pack_message(request.base));
  if (!reply) return fail(reply.error());
  return only(snapshot_list_from(*reply));
}

Result<std::vector<VmRecord>> VmmClient::fork_snapshot(const ForkRequest& request) {
  // Clones start one after another, each like a VM.
  auto reply = call(*rpc_, MessageType::kVmmForkSnapshot, pack_fork_request(request),
                    kCallTimeout * std::max(1u, request.count));
  if (!reply) return fail(reply.error());
  return vm_list_from(*reply);
}

Result<std::vector<SnapshotRecord>> VmmClient::snapshots() {
  auto reply = call(*rpc_, MessageType::kVmmListSnapshots, pods::empty_message());
  if (!reply) return fail(reply.error());
  return snapshot_list_from(*reply);
}

Result<SnapshotRecord> VmmClient::snapshot(const std::string& name) {
  auto all = snapshots();
  if (!all) return fail(all.error());
  for (auto& snapshot : *all) {
    if (snapshot.name == name) return snapshot;
  }
  return fail(ErrorCode::kNotFound, "no snapshot named '" + name + "'");
}

Status VmmClient::delete_snapshot(const std::string& name) {
  auto reply = call(*rpc_, MessageType::kVmmDeleteSnapshot, name_body(name));
  if (!reply) return fail(reply.error());
  return {};
}

Status VmmClient::drop_cache(const std::string& name) {
  auto reply = call(*rpc_, MessageType::kVmmDropCache, name_body(name));
  if (!reply) return fail(reply.error());
  return {};
}

Result<std::vector<VmRecord>> VmmClient::vms() {
  auto reply = call(*rpc_, MessageType::kVmmListVms, pods::empty_message());
  if (!reply) return fail(reply.error());
  return vm_list_from(*reply);
}

Result<VmRecord> VmmClient::vm(const std::string& name) {
  auto all = vms();
  if (!all) return fail(all.error());
  for (auto& vm : *all) {
    if (vm.name == name) return vm;
  }
  return fail(ErrorCode::kNotFound, "no vm named '" + name + "'");
}

Result<cpuserver::GuestStats> VmmClient::vm_stats(const std::string& name) {
  auto reply = call(*rpc_, MessageType::kVmmVmStats, name_body(name));
  if (!reply) return fail(reply.error());
  auto message = net::unpack<Vmpod__Pods__VmStats>(vmpod__pods__vm_stats__descriptor, *reply);
  if (!message) return fail(message.error());
  return cpuserver::stats_from(message->get());
}

}  // namespace vmpod::vmm
