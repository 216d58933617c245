// The lifecycle of a composed VM: one state machine, checked before any
// action (Cloud Hypervisor's valid_transition), with an event on every change.
#pragma once

#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod::vmm {

enum class VmState {
  kDefined,
  kStarting,
  kRunning,
  kPaused,
  kSnapshotting,
  kMigrating,
  kStopped,
  kFailed,
};

inline constexpr VmState kAllVmStates[] = {
    VmState::kDefined,      VmState::kStarting,  VmState::kRunning, VmState::kPaused,
    VmState::kSnapshotting, VmState::kMigrating, VmState::kStopped, VmState::kFailed,
};

std::string_view vm_state_name(VmState state);
Result<VmState> parse_vm_state(std::string_view name);
bool valid_transition(VmState from, VmState to);
// kWrongState naming both states when the move is not allowed.
Status check_transition(VmState from, VmState to);
// A QEMU runs for the VM, its vCPUs running or stopped by a monitor.
constexpr bool vm_has_qemu(VmState state) { return state == VmState::kRunning || state == VmState::kPaused; }
// Started and not ended: running or paused, or on its way between them
// (starting, snapshotting, migrating).
constexpr bool vm_is_live(VmState state) {
  return state != VmState::kDefined && state != VmState::kStopped && state != VmState::kFailed;
}

}  // namespace vmpod::vmm
