#include <vmpod/cpuserver/compute_client.h>

#include <vmpod/pods/rpc.h>

#include <vmpod/cpuserver/compute_protocol.h>

namespace vmpod::cpuserver {

using pods::MessageType;
using pods::rpc_call;

namespace {

constexpr auto kCallTimeout = std::chrono::seconds(10);
constexpr auto kLaunchTimeout = std::chrono::seconds(60);

}  // namespace

Result<std::unique_ptr<ComputePodClient>> ComputePodClient::connect(const net::SocketAddress& control,
                                                                    std::chrono::milliseconds timeout) {
  auto rpc = net::RpcClient::connect(control, timeout);
  if (!rpc) return fail(rpc.error().context("compute pod " + control.to_string()));
  return std::unique_ptr<ComputePodClient>(new ComputePodClient(std::move(*rpc)));
}

Result<GuestRuntime> ComputePodClient::launch(const GuestSpec& guest, const MemoryPlacement& placement) {
  GuestSpecMessage spec(guest);
  PlacementMessage place(placement);
  Vmpod__Pods__LaunchRequest request = VMPOD__PODS__LAUNCH_REQUEST__INIT;
  request.guest = &spec.message;
  request.placement = &place.message;
  auto reply = rpc_call<Vmpod__Pods__VmRuntime>(*rpc_, MessageType::kCpuLaunch, request.base,
                                                vmpod__pods__vm_runtime__descriptor, kLaunchTimeout);
  if (!reply) return fail(reply.error());
  return runtime_from(reply->get());
}

Result<GuestRuntime> ComputePodClient::receive_guest(const GuestSpec& guest, const MemoryPlacement& placement,
                                                     const GuestTransfer& transfer) {
  GuestSpecMessage spec(guest);
  PlacementMessage place(placement);
  TransferMessage state(transfer);
  Vmpod__Pods__LaunchRequest launch = VMPOD__PODS__LAUNCH_REQUEST__INIT;
  launch.guest = &spec.message;
  launch.placement = &place.message;
  Vmpod__Pods__ReceiveGuestRequest request = VMPOD__PODS__RECEIVE_GUEST_REQUEST__INIT;
  request.launch = &launch;
  request.transfer = &state.message;
  auto reply = rpc_call<Vmpod__Pods__VmRuntime>(*rpc_, MessageType::kCpuReceiveGuest, request.base,
                                                vmpod__pods__vm_runtime__descriptor, kLaunchTimeout);
  if (!reply) return fail(reply.error());
  return runtime_from(reply->get());
}

namespace {

Result<std::string> named_call(net::RpcClient& rpc, MessageType type, const std::string& name) {
  Vmpod__Pods__VmName request = VMPOD__PODS__VM_NAME__INIT;
  request.name = const_cast<char*>(name.c_str());
  auto body = rpc.call(pods::wire(type), net::pack_message(request.base), kCallTimeout);
  if (!body) return fail(body.error().context(pods::message_type_name(pods::wire(type))));
  return body;
}

}  // namespace

Status ComputePodClient::stop(const std::string& name) {
  auto reply = named_call(*rpc_, MessageType::kCpuStop, name);
  if (!reply) return fail(reply.error());
  return {};
}

Status ComputePodClient::drop_cache(const std::string& name) {
  auto reply = named_call(*rpc_, MessageType::kCpuDropCache, name);
  if (!reply) return fail(reply.error());
  return {};
}

Result<GuestStats> ComputePodClient::stats(const std::string& name) {
  auto reply = named_call(*rpc_, MessageType::kCpuStats, name);
  if (!reply) return fail(reply.error());
  auto message = net::unpack<Vmpod__Pods__VmStats>(vmpod__pods__vm_stats__descriptor, *reply);
  if (!message) return fail(message.error());
  return stats_from(message->get());
}

Result<GuestTransfer> ComputePodClient::send_guest(const std::string& name) {
  auto reply = named_call(*rpc_, MessageType::kCpuSendGuest, name);
  if (!reply) return fail(reply.error());
  auto message = net::unpack<Vmpod__Pods__GuestTransfer>(vmpod__pods__guest_transfer__descriptor, *reply);
  if (!message) return fail(message.error());
  return transfer_from(message->get());
}

Status ComputePodClient::finish_send(const std::string& name) {
  auto reply = named_call(*rpc_, MessageType::kCpuFinishSend, name);
  if (!reply) return fail(reply.error());
  return {};
}

Status ComputePodClient::cancel_send(const std::string& name) {
  auto reply = named_call(*rpc_, MessageType::kCpuCancelSend, name);
  if (!reply) return fail(reply.error());
  return {};
}

Result<ReadRecording> ComputePodClient::working_set(const std::string& name) {
  auto reply = named_call(*rpc_, MessageType::kCpuWorkingSet, name);
  if (!reply) return fail(reply.error());
  return working_set_from(*reply);
}

Result<ComputePodStatus> ComputePodClient::status() {
  Vmpod__Pods__Empty request = VMPOD__PODS__EMPTY__INIT;
  auto reply = rpc_call<Vmpod__Pods__ComputeStatus>(*rpc_, MessageType::kCpuStatus, request.base,
                                                    vmpod__pods__compute_status__descriptor,
                                                    kCallTimeout);
  if (!reply) return fail(reply.error());
  ComputePodStatus status;
  status.pod_id = (*reply)->pod_id;
  for (size_t i = 0; i < (*reply)->n_vms; ++i) {
    auto runtime = runtime_from((*reply)->vms[i]);
    if (!runtime) return fail(runtime.error());
    status.guests.push_back(std::move(*runtime));
  }
  return status;
}

}  // namespace vmpod::cpuserver
