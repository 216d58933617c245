#include <vmpod/vmm/vm_state.h>

#include <string>

namespace vmpod::vmm {

std::string_view vm_state_name(VmState state) {
  switch (state) {
    case VmState::kDefined: return "defined";
    case VmState::kStarting: return "starting";
    case VmState::kRunning: return "running";
    case VmState::kPaused: return "paused";
    case VmState::kSnapshotting: return "snapshotting";
    case VmState::kMigrating: return "migrating";
    case VmState::kStopped: return "stopped";
    case VmState::kFailed: return "failed";
  }
  return "failed";
}

Result<VmState> parse_vm_state(std::string_view name) {
  for (VmState state : kAllVmStates) {
    if (vm_state_name(state) == name) return state;
  }
  return fail(ErrorCode::kInvalidArgument, "unknown vm state '" + std::string(name) + "'");
}

bool valid_transition(VmState from, VmState to) {
  using S = VmState;
  // Any live state may fail or stop; the rest is the table below.
  bool live = from == S::kStarting || from == S::kRunning || from == S::kPaused ||
              from == S::kSnapshotting || from == S::kMigrating;
  if (live && (to == S::kFailed || to == S::kStopped)) return true;
  switch (from) {
    case S::kDefined: return to == S::kStarting || to == S::kStopped;
    case S::kStarting: return to == S::kRunning || to == S::kPaused;
    // A restart goes straight back to starting: the VM keeps its endpoint.
    case S::kRunning:
      return to == S::kPaused || to == S::kSnapshotting || to == S::kMigrating || to == S::kStarting;
    case S::kPaused:
      return to == S::kRunning || to == S::kSnapshotting || to == S::kMigrating || to == S::kStarting;
    case S::kSnapshotting: return to == S::kRunning || to == S::kPaused;
    case S::kMigrating: return to == S::kRunning || to == S::kPaused;
    case S::kStopped: return to == S::kStarting;
    case S::kFailed: return to == S::kStarting || to == S::kStopped;
  }
  return false;
}

Status check_transition(VmState from, VmState to) {
  if (valid_transition(from, to)) return {};
  return fail(ErrorCode::kWrongState, "vm is " + std::string(vm_state_name(from)) + ", cannot become " +
                                          std::string(vm_state_name(to)));
}

}  // namespace vmpod::vmm
