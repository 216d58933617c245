#include <vmpod/pods/protocol.h>
#include <vmpod/pods/rpc.h>

#include <cstring>

#include "memory.pb-c.h"

namespace vmpod::pods {

std::string_view message_type_name(uint16_t type) {
  switch (static_cast<MessageType>(type)) {
    case MessageType::kMemHello: return "mem-hello";
    case MessageType::kMemCreateRegion: return "mem-create-region";
    case MessageType::kMemResizeRegion: return "mem-resize-region";
    case MessageType::kMemDeleteRegion: return "mem-delete-region";
    case MessageType::kMemStats: return "mem-stats";
    case MessageType::kMemPing: return "mem-ping";
    case MessageType::kMemFreezeRegion: return "mem-freeze-region";
    case MessageType::kMemForkRegion: return "mem-fork-region";
    case MessageType::kMemReleaseVersion: return "mem-release-version";
    case MessageType::kMemDescribeVersion: return "mem-describe-version";
    case MessageType::kCpuStatus: return "cpu-status";
    case MessageType::kCpuLaunch: return "cpu-launch";
    case MessageType::kCpuStop: return "cpu-stop";
    case MessageType::kCpuDropCache: return "cpu-drop-cache";
    case MessageType::kCpuStats: return "cpu-stats";
    case MessageType::kCpuSendGuest: return "cpu-send-guest";
    case MessageType::kCpuFinishSend: return "cpu-finish-send";
    case MessageType::kCpuCancelSend: return "cpu-cancel-send";
    case MessageType::kCpuReceiveGuest: return "cpu-receive-guest";
    case MessageType::kCpuWorkingSet: return "cpu-working-set";
    case MessageType::kVmmRegisterPod: return "vmm-register-pod";
    case MessageType::kVmmCreateVm: return "vmm-create-vm";
    case MessageType::kVmmStopVm: return "vmm-stop-vm";
    case MessageType::kVmmListVms: return "vmm-list-vms";
    case MessageType::kVmmListPods: return "vmm-list-pods";
    case MessageType::kVmmVmStats: return "vmm-vm-stats";
    case MessageType::kVmmDropCache: return "vmm-drop-cache";
    case MessageType::kVmmRestartVm: return "vmm-restart-vm";
    case MessageType::kVmmMigrateVm: return "vmm-migrate-vm";
    case MessageType::kVmmSnapshotVm: return "vmm-snapshot-vm";
    case MessageType::kVmmForkSnapshot: return "vmm-fork-snapshot";
    case MessageType::kVmmListSnapshots: return "vmm-list-snapshots";
    case MessageType::kVmmDeleteSnapshot: return "vmm-delete-snapshot";
    case MessageType::kVmmRemoveVm: return "vmm-remove-vm";
  }
  return "unknown";
}

Result<RegionToken> token_from(const ProtobufCBinaryData& bytes) {
  RegionToken token{};
  if (bytes.len != token.size()) {
    return fail(ErrorCode::kInvalidArgument, "token of " + std::to_string(bytes.len) +
                                                 " bytes, not " + std::to_string(token.size()));
  }
  std::memcpy(token.data(), bytes.data, token.size());
  return token;
}

std::string empty_message() {
  Vmpod__Pods__Empty empty = VMPOD__PODS__EMPTY__INIT;
  return net::pack_message(empty.base);
}

}  // namespace vmpod::pods
