// Frame types of every control protocol between vmpod pods and the vmm, in
// one table so no two protocols can reuse a number.
#pragma once

#include <cstdint>
#include <string_view>

namespace vmpod::pods {

enum class MessageType : uint16_t {
  // memory pod
  kMemHello = 0x0101,
  kMemCreateRegion = 0x0102,
  kMemResizeRegion = 0x0103,
  kMemDeleteRegion = 0x0104,
  kMemStats = 0x0105,
  kMemPing = 0x0106,
  kMemFreezeRegion = 0x0107,
  kMemForkRegion = 0x0108,
  kMemReleaseVersion = 0x0109,
  kMemDescribeVersion = 0x010a,
  // compute pod
  kCpuStatus = 0x0201,
  kCpuLaunch = 0x0202,
  kCpuStop = 0x0203,
  kCpuDropCache = 0x0204,
  kCpuStats = 0x0205,
  kCpuSendGuest = 0x0206,
  kCpuFinishSend = 0x0207,
  kCpuCancelSend = 0x0208,
  kCpuReceiveGuest = 0x0209,
  kCpuWorkingSet = 0x020a,
  // vmm
  kVmmRegisterPod = 0x0301,
  kVmmCreateVm = 0x0302,
  kVmmStopVm = 0x0303,
  kVmmListVms = 0x0304,
  kVmmListPods = 0x0305,
  kVmmVmStats = 0x0306,
  kVmmDropCache = 0x0307,
  kVmmRestartVm = 0x0308,
  kVmmMigrateVm = 0x0309,
  kVmmSnapshotVm = 0x030a,
  kVmmForkSnapshot = 0x030b,
  kVmmListSnapshots = 0x030c,
  kVmmDeleteSnapshot = 0x030d,
  kVmmRemoveVm = 0x030e,
};

constexpr uint16_t wire(MessageType type) { return static_cast<uint16_t>(type); }
std::string_view message_type_name(uint16_t type);

}  // namespace vmpod::pods
