// Control-plane bodies as daemons receive them: the first two bytes pick a
// frame type (memory pod, compute pod or vmm), the rest is a body. The body
// is unpacked against every message of the pods protocol; whatever unpacks
// is re-packed (which must be stable) and handed to the decoding helpers
// the daemons run on it: guest_spec_from, runtime_from, stats_from,
// token_from. A value those helpers accept must survive their own encoders
// unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include <vmpod/cpuserver/compute_protocol.h>
#include <vmpod/net/message.h>
#include <vmpod/pods/protocol.h>
#include <vmpod/pods/rpc.h>

#include "compute.pb-c.h"
#include "memory.pb-c.h"
#include "vmm.pb-c.h"

using namespace vmpod;
using vmpod::pods::MessageType;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

constexpr MessageType kTypes[] = {
    MessageType::kMemHello,       MessageType::kMemCreateRegion, MessageType::kMemResizeRegion,
    MessageType::kMemDeleteRegion, MessageType::kMemStats,       MessageType::kMemPing,
    MessageType::kCpuStatus,      MessageType::kCpuLaunch,       MessageType::kCpuStop,
    MessageType::kCpuDropCache,   MessageType::kCpuStats,        MessageType::kVmmRegisterPod,
    MessageType::kVmmCreateVm,    MessageType::kVmmStopVm,       MessageType::kVmmListVms,
    MessageType::kVmmListPods,    MessageType::kVmmVmStats,      MessageType::kVmmDropCache,
    MessageType::kVmmRestartVm,
    // Appended, so that the committed inputs keep the types they select.
    MessageType::kMemFreezeRegion, MessageType::kMemForkRegion, MessageType::kMemReleaseVersion,
    MessageType::kMemDescribeVersion,
    MessageType::kCpuSendGuest, MessageType::kCpuFinishSend, MessageType::kCpuCancelSend,
    MessageType::kCpuReceiveGuest, MessageType::kVmmMigrateVm, MessageType::kVmmSnapshotVm,
    MessageType::kVmmForkSnapshot, MessageType::kVmmListSnapshots, MessageType::kVmmDeleteSnapshot,
    MessageType::kVmmRemoveVm,
};

const ProtobufCMessageDescriptor* const kDescriptors[] = {
    // memory.proto
    &vmpod__pods__mem_hello_request__descriptor, &vmpod__pods__mem_hello_reply__descriptor,
    &vmpod__pods__create_region_request__descriptor, &vmpod__pods__region_ref__descriptor,
    &vmpod__pods__create_region_reply__descriptor, &vmpod__pods__resize_region_request__descriptor,
    &vmpod__pods__delete_region_request__descriptor, &vmpod__pods__empty__descriptor,
    &vmpod__pods__latency_histogram__descriptor, &vmpod__pods__mem_stats_reply__descriptor,
    &vmpod__pods__version_ref__descriptor, &vmpod__pods__freeze_region_request__descriptor,
    &vmpod__pods__version_reply__descriptor, &vmpod__pods__fork_region_request__descriptor,
    &vmpod__pods__release_version_request__descriptor,
    &vmpod__pods__describe_version_request__descriptor,
    // compute.proto
    &vmpod__pods__guest_spec__descriptor, &vmpod__pods__memory_placement__descriptor,
    &vmpod__pods__launch_request__descriptor, &vmpod__pods__vm_runtime__descriptor,
    &vmpod__pods__vm_name__descriptor, &vmpod__pods__compute_status__descriptor,
    &vmpod__pods__podfs_stats__descriptor, &vmpod__pods__vm_stats__descriptor,
    // vmm.proto
    &vmpod__pods__pod_entry__descriptor, &vmpod__pods__register_pod_request__descriptor,
    &vmpod__pods__pod_list__descriptor, &vmpod__pods__create_vm_request__descriptor,
    &vmpod__pods__vm_info__descriptor, &vmpod__pods__vm_list__descriptor,
    &vmpod__pods__migrate_vm_request__descriptor, &vmpod__pods__migrate_vm_reply__descriptor,
    &vmpod__pods__snapshot_vm_request__descriptor, &vmpod__pods__snapshot_info__descriptor,
    &vmpod__pods__snapshot_list__descriptor, &vmpod__pods__fork_snapshot_request__descriptor,
    // compute.proto, a guest moving between compute pods
    &vmpod__pods__guest_transfer__descriptor, &vmpod__pods__receive_guest_request__descriptor,
};

// A transfer the compute pod accepts re-encodes to the same transfer.
void transfer(const Vmpod__Pods__GuestTransfer* message) {
  auto decoded = cpuserver::transfer_from(message);
  if (!decoded) {
    check(decoded.error().code() == ErrorCode::kInvalidArgument);
    return;
  }
  cpuserver::TransferMessage again(*decoded);
  auto round = cpuserver::transfer_from(&again.message);
  check(round.has_value() && round->device_state == decoded->device_state && round->ram.size == decoded->ram.size &&
        round->running == decoded->running && round->ram.regions.size() == decoded->ram.regions.size());
  for (size_t i = 0; i < decoded->ram.regions.size(); ++i) {
    check(round->ram.regions[i].id == decoded->ram.regions[i].id &&
          round->ram.regions[i].token == decoded->ram.regions[i].token);
  }
}

template <class T>
const T* as(const ProtobufCMessage* message, const ProtobufCMessageDescriptor& descriptor) {
  return message->descriptor == &descriptor ? reinterpret_cast<const T*>(message) : nullptr;
}

void guest_spec(const Vmpod__Pods__GuestSpec* message) {
  auto spec = cpuserver::guest_spec_from(message);
  if (!spec) {
    check(spec.error().code() == ErrorCode::kInvalidArgument);
    return;
  }
  check(!spec->name.empty() && spec->name.find('/') == std::string::npos && spec->name[0] != '.');
  check(spec->memory_bytes >= (16ull << 20) && spec->memory_bytes % (1ull << 20) == 0);
  check(spec->cpus >= 1);
  check(!spec->kernel.empty() || !spec->disk.empty());
  // What the vmm accepted, it forwards to a compute pod: the same guest
  // must come out at the other end.
  cpuserver::GuestSpecMessage again(*spec);
  auto wire = net::pack_message(again.message.base);
  auto unpacked = net::unpack<Vmpod__Pods__GuestSpec>(vmpod__pods__guest_spec__descriptor, wire);
  check(unpacked.has_value());
  auto round = cpuserver::guest_spec_from(unpacked->get());
  check(round.has_value());
  check(round->name == spec->name && round->memory_bytes == spec->memory_bytes &&
        round->cpus == spec->cpus && round->machine == spec->machine &&
        round->accel == spec->accel && round->kernel == spec->kernel &&
        round->initrd == spec->initrd && round->append == spec->append &&
        round->disk == spec->disk);
}

void runtime(const Vmpod__Pods__VmRuntime* message) {
  auto runtime = cpuserver::runtime_from(message);
  if (!runtime) return;
  auto wire = cpuserver::pack_runtime(*runtime);
  auto unpacked = net::unpack<Vmpod__Pods__VmRuntime>(vmpod__pods__vm_runtime__descriptor, wire);
  check(unpacked.has_value());
  auto round = cpuserver::runtime_from(unpacked->get());
  check(round.has_value());
  check(round->name == runtime->name && round->state == runtime->state &&
        round->reason == runtime->reason && round->qemu_pid == runtime->qemu_pid &&
        round->accel == runtime->accel && round->run_dir == runtime->run_dir &&
        round->paths.qmp_socket == runtime->paths.qmp_socket &&
        round->paths.serial_socket == runtime->paths.serial_socket &&
        round->paths.serial_log == runtime->paths.serial_log &&
        round->paths.agent_socket == runtime->paths.agent_socket &&
        round->paths.qemu_log == runtime->paths.qemu_log && round->ram_file == runtime->ram_file);
}

bool same(const pods::MemoryPodStats& a, const pods::MemoryPodStats& b) {
  return a.pod_id == b.pod_id && a.capacity_pages == b.capacity_pages &&
         a.pages_held == b.pages_held && a.regions == b.regions && a.reads == b.reads &&
         a.writes == b.writes && a.bytes_read == b.bytes_read &&
         a.bytes_written == b.bytes_written && a.refused == b.refused &&
         a.read_latency == b.read_latency && a.write_latency == b.write_latency &&
         a.region_pages == b.region_pages && a.versions == b.versions;
}

void stats(const Vmpod__Pods__VmStats* message) {
  auto stats = cpuserver::stats_from(message);
  if (!stats) return;
  auto wire = cpuserver::pack_stats(message->name, *stats);
  auto unpacked = net::unpack<Vmpod__Pods__VmStats>(vmpod__pods__vm_stats__descriptor, wire);
  check(unpacked.has_value());
  auto round = cpuserver::stats_from(unpacked->get());
  check(round.has_value());
  const auto& p = stats->podfs;
  const auto& q = round->podfs;
  check(p.files == q.files && p.reads == q.reads && p.bytes_read == q.bytes_read &&
        p.writes == q.writes && p.bytes_written == q.bytes_written &&
        p.zero_reads == q.zero_reads && p.evictions == q.evictions &&
        p.bytes_evicted == q.bytes_evicted && p.cached_bytes == q.cached_bytes &&
        p.cache_limit == q.cache_limit && p.io_errors == q.io_errors &&
        p.read_latency == q.read_latency && p.write_latency == q.write_latency);
  check(round->memory_pods.size() == stats->memory_pods.size());
  for (size_t i = 0; i < stats->memory_pods.size(); ++i) {
    check(same(round->memory_pods[i], stats->memory_pods[i]));
  }
}

// A region's or a version's token: exactly 16 bytes or refused, and then
// the same bytes.
void token(const ProtobufCBinaryData& bytes) {
  auto parsed = pods::token_from(bytes);
  if (!parsed) {
    check(parsed.error().code() == ErrorCode::kInvalidArgument && bytes.len != 16);
    return;
  }
  check(bytes.len == 16 && std::memcmp(parsed->data(), bytes.data, bytes.len) == 0);
}

template <class Ref>
void ref(const Ref* ref) {
  if (ref != nullptr) token(ref->token);
}

// The helpers a daemon runs on a message of this shape.
void decode(const ProtobufCMessage* message) {
  if (auto* m = as<Vmpod__Pods__RegionRef>(message, vmpod__pods__region_ref__descriptor)) {
    ref(m);
  } else if (auto* m = as<Vmpod__Pods__VersionRef>(message, vmpod__pods__version_ref__descriptor)) {
    ref(m);
  } else if (auto* m = as<Vmpod__Pods__FreezeRegionRequest>(message, vmpod__pods__freeze_region_request__descriptor)) {
    ref(m->region);
  } else if (auto* m = as<Vmpod__Pods__VersionReply>(message, vmpod__pods__version_reply__descriptor)) {
    ref(m->version);
  } else if (auto* m = as<Vmpod__Pods__ForkRegionRequest>(message, vmpod__pods__fork_region_request__descriptor)) {
    ref(m->version);
  } else if (auto* m = as<Vmpod__Pods__ReleaseVersionRequest>(message, vmpod__pods__release_version_request__descriptor)) {
    ref(m->version);
  } else if (auto* m = as<Vmpod__Pods__DescribeVersionRequest>(message, vmpod__pods__describe_version_request__descriptor)) {
    ref(m->version);
  } else if (auto* m = as<Vmpod__Pods__GuestSpec>(message, vmpod__pods__guest_spec__descriptor)) {
    guest_spec(m);
  } else if (auto* m = as<Vmpod__Pods__LaunchRequest>(message, vmpod__pods__launch_request__descriptor)) {
    guest_spec(m->guest);
  } else if (auto* m = as<Vmpod__Pods__CreateVmRequest>(message, vmpod__pods__create_vm_request__descriptor)) {
    guest_spec(m->guest);
  } else if (auto* m = as<Vmpod__Pods__VmRuntime>(message, vmpod__pods__vm_runtime__descriptor)) {
    runtime(m);
  } else if (auto* m = as<Vmpod__Pods__ComputeStatus>(message, vmpod__pods__compute_status__descriptor)) {
    for (size_t i = 0; i < m->n_vms; ++i) runtime(m->vms[i]);
  } else if (auto* m = as<Vmpod__Pods__VmInfo>(message, vmpod__pods__vm_info__descriptor)) {
    runtime(m->runtime);
  } else if (auto* m = as<Vmpod__Pods__VmList>(message, vmpod__pods__vm_list__descriptor)) {
    for (size_t i = 0; i < m->n_vms; ++i) runtime(m->vms[i]->runtime);
  } else if (auto* m = as<Vmpod__Pods__VmStats>(message, vmpod__pods__vm_stats__descriptor)) {
    stats(m);
  } else if (auto* m = as<Vmpod__Pods__GuestTransfer>(message, vmpod__pods__guest_transfer__descriptor)) {
    transfer(m);
  } else if (auto* m = as<Vmpod__Pods__ReceiveGuestRequest>(message, vmpod__pods__receive_guest_request__descriptor)) {
    if (m->launch != nullptr) guest_spec(m->launch->guest);
    transfer(m->transfer);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  uint16_t selector = static_cast<uint16_t>(data[0] | (data[1] << 8));
  MessageType type = kTypes[selector % std::size(kTypes)];
  check(pods::message_type_name(pods::wire(type)) != "unknown");
  (void)pods::message_type_name(selector);
  std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);
  for (const ProtobufCMessageDescriptor* descriptor : kDescriptors) {
    auto message = net::unpack_message(*descriptor, body);
    if (!message) {
      check(message.error().code() == ErrorCode::kInvalidArgument);
      continue;
    }
    check((*message)->descriptor == descriptor);
    // Packing is stable: what a daemon re-sends unpacks to the same bytes.
    // (protobuf-c keeps an unknown field with an overlong tag for field 0
    // and re-packs it as a tag it then refuses: such a body does not
    // round trip, so only a body that unpacks again is compared.)
    std::string packed = net::pack_message(**message);
    auto again = net::unpack_message(*descriptor, packed);
    if (again) check(net::pack_message(**again) == packed);
    decode(message->get());
  }
  // An error reply can arrive for any request type.
  (void)net::unpack_error(body);
  return 0;
}
