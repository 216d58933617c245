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
  std::vector<std::string> pods;
  for (const auto& address : placement.memory_pods) pods.push_back(address.to_string());
  std::vector<char*> pod_ptrs;
  for (auto& pod : pods) pod_ptrs.push_back(pod.data());
  std::string provider(net::fabric_provider_name(placement.fabric.provider));
  Vmpod__Pods__MemoryPlacement place = VMPOD__PODS__MEMORY_PLACEMENT__INIT;
  place.n_memory_pods = pod_ptrs.size();
  place.memory_pods = pod_ptrs.data();
  place.provider = provider.data();
  place.stripe_bytes = placement.stripe_bytes;
  place.local_cache_bytes = placement.local_cache_bytes;
  Vmpod__Pods__LaunchRequest request = VMPOD__PODS__LAUNCH_REQUEST__INIT;
  request.guest = &spec.message;
  request.placement = &place;
  auto reply = rpc_call<Vmpod__Pods__VmRuntime>(*rpc_, MessageType::kCpuLaunch, request.base,
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
