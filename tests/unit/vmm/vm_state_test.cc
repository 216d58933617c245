// The VM lifecycle table, written out in full: every (from, to) pair of
// kAllVmStates, so a change to valid_transition shows up here as a diff.
#include <criterion/criterion.h>

#include <set>
#include <string>

#include <vmpod/vmm/vm_state.h>

using namespace vmpod;
using namespace vmpod::vmm;

namespace {

constexpr size_t kStates = std::size(kAllVmStates);

// Rows: from; columns: to, in kAllVmStates order
//            def  sta  run  pau  sna  mig  sto  fai
constexpr bool kAllowed[kStates][kStates] = {
    /* defined      */ {0, 1, 0, 0, 0, 0, 1, 0},  // start it, or remove it unstarted
    /* starting     */ {0, 0, 1, 1, 0, 0, 1, 1},  // boots running or paused (-S)
    /* running      */ {0, 1, 0, 1, 1, 1, 1, 1},  // restart goes back to starting
    /* paused       */ {0, 1, 1, 0, 1, 1, 1, 1},
    /* snapshotting */ {0, 0, 1, 1, 0, 0, 1, 1},  // back to how it was
    /* migrating    */ {0, 0, 1, 1, 0, 0, 1, 1},  // migration failed: resume here
    /* stopped      */ {0, 1, 0, 0, 0, 0, 0, 0},  // only a restart
    /* failed       */ {0, 1, 0, 0, 0, 0, 1, 0},  // restart, or acknowledge and stop
};

constexpr const char* kNames[kStates] = {"defined",      "starting",  "running", "paused",
                                         "snapshotting", "migrating", "stopped", "failed"};

}  // namespace

Test(vm_state, all_states_listed_once_in_enum_order) {
  cr_assert_eq(kStates, 8u);
  for (size_t i = 0; i < kStates; ++i) {
    cr_expect_eq(static_cast<size_t>(kAllVmStates[i]), i, "kAllVmStates[%zu] out of order", i);
  }
}

Test(vm_state, every_transition_matches_the_table) {
  int mismatches = 0;
  for (size_t f = 0; f < kStates; ++f) {
    for (size_t t = 0; t < kStates; ++t) {
      VmState from = kAllVmStates[f], to = kAllVmStates[t];
      bool got = valid_transition(from, to);
      if (got != kAllowed[f][t]) {
        ++mismatches;
        cr_expect_eq(got, kAllowed[f][t], "%s -> %s is %s, the table says %s", kNames[f],
                     kNames[t], got ? "allowed" : "refused", kAllowed[f][t] ? "allowed" : "refused");
      }
    }
  }
  cr_expect_eq(mismatches, 0);
}

Test(vm_state, check_transition_agrees_and_names_both_states) {
  for (size_t f = 0; f < kStates; ++f) {
    for (size_t t = 0; t < kStates; ++t) {
      VmState from = kAllVmStates[f], to = kAllVmStates[t];
      Status st = check_transition(from, to);
      cr_expect_eq(st.has_value(), kAllowed[f][t], "%s -> %s", kNames[f], kNames[t]);
      if (!st) {
        cr_expect_eq(st.error().code(), ErrorCode::kWrongState);
        const std::string& message = st.error().message();
        cr_expect(message.find(kNames[f]) != std::string::npos &&
                      message.find(kNames[t]) != std::string::npos,
                  "%s -> %s: '%s'", kNames[f], kNames[t], message.c_str());
      }
    }
  }
}

Test(vm_state, no_state_moves_to_itself) {
  for (VmState state : kAllVmStates) {
    cr_expect(!valid_transition(state, state), "%s -> itself allowed",
              std::string(vm_state_name(state)).c_str());
  }
}

Test(vm_state, names_round_trip) {
  std::set<std::string> seen;
  for (size_t i = 0; i < kStates; ++i) {
    std::string name(vm_state_name(kAllVmStates[i]));
    cr_expect_eq(name, std::string(kNames[i]));
    seen.insert(name);
    auto parsed = parse_vm_state(name);
    cr_assert(parsed.has_value(), "'%s' does not parse", name.c_str());
    cr_expect_eq(*parsed, kAllVmStates[i]);
  }
  cr_expect_eq(seen.size(), kStates);
}

Test(vm_state, unknown_names_are_refused) {
  for (const char* name : {"", "Running", "RUNNING", "run", "running ", " running", "stopping",
                           "unknown"}) {
    auto parsed = parse_vm_state(name);
    cr_expect(!parsed.has_value(), "'%s' parsed", name);
    if (!parsed) {
      cr_expect_eq(parsed.error().code(), ErrorCode::kInvalidArgument);
      cr_expect(parsed.error().message().find(std::string("'") + name + "'") != std::string::npos,
                "%s", parsed.error().message().c_str());
    }
  }
}

// A live VM is one that can still end: what `vmpod run` follows across a
// snapshot or a migration instead of taking it for the guest's end.
Test(vm_state, live_states_are_those_a_vm_can_end_from) {
  for (VmState state : kAllVmStates) {
    const bool can_end = valid_transition(state, VmState::kStopped) && state != VmState::kDefined &&
                         state != VmState::kFailed;
    cr_expect_eq(vm_is_live(state), can_end, "%s", std::string(vm_state_name(state)).c_str());
    if (vm_has_qemu(state)) cr_expect(vm_is_live(state));
  }
}
