// A stress plan: the file a `vmpod stress PLAN` run is made of (docs/stress-plan.md).
// It names the guest, the setup run once before the base snapshot, the
// readiness check, the code under test, the command with the parameters to
// sweep, how many clones and iterations, and what counts as a failure.
// Loading it checks everything; expanding it gives every run its id, its
// parameters, its seed and its command, so that any run can be redone.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/base/result.h>

namespace vmpod::stress {

struct GuestPlan {
  std::string kernel;  // empty: the built guest image's
  std::string initrd;  // likewise
  uint64_t memory_bytes = 256ull << 20;
  unsigned cpus = 1;
  std::string append;  // more kernel parameters
};

struct BasePlan {
  std::string setup;  // run once in the base machine before its snapshot
  std::string ready;  // run until it exits 0; then the base is snapshotted
  std::chrono::milliseconds setup_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds ready_timeout{std::chrono::minutes(2)};
};

struct CodePlan {
  std::string dir;               // absolute; empty: no code under test
  std::string mount = "/code";   // where clones see it, read-only
};

struct TestPlan {
  // A template: {name} is replaced by the run's value for it (see RunSpec),
  // {{ and }} are literal braces.
  std::string command;
  // Each parameter's values; every combination is run (in key order).
  std::map<std::string, std::vector<std::string>> sweep;
  unsigned clones = 1;      // runs per combination per iteration
  unsigned iterations = 1;
  unsigned parallel = 0;    // clones at a time; 0: as many as `clones`
  std::chrono::milliseconds time_limit{std::chrono::minutes(5)};
  uint64_t seed = 1;        // the plan's seed, from which each run's is drawn
};

struct FailurePlan {
  std::vector<int> ok_exit_codes{0};
  std::vector<std::string> console_patterns;  // substrings of the console or output that fail a run
  bool panic = true;                          // a guest kernel panic fails the run
};

struct StressPlan {
  std::string path;  // the file it came from, if any
  std::string name;
  GuestPlan guest;
  BasePlan base;
  CodePlan code;
  TestPlan test;
  FailurePlan failure;
};

// Parses a plan; relative paths are taken from base_dir. Errors name
// source_name:line and the key.
Result<StressPlan> parse_plan(std::string_view text, const std::string& base_dir, const std::string& source_name);
Result<StressPlan> load_plan(const std::string& path);

// One run of the plan: one clone running the command once.
struct RunSpec {
  unsigned index = 0;       // 0-based, in expansion order
  std::string id;           // "r0001", from index + 1
  unsigned iteration = 0;   // 0-based
  unsigned clone = 0;       // 0-based within its combination and iteration
  std::map<std::string, std::string> params;  // this combination's sweep values
  uint64_t seed = 0;        // run_seed(plan seed, index)
  std::string command;      // the template filled in
};

// Iterations outermost, then combinations, then clones. The values a
// template may name: the sweep's parameters, seed, run (the id),
// iteration, clone, and code (the code mount).
Result<std::vector<RunSpec>> expand_runs(const StressPlan& plan);
// The same run again, from the plan, by id; kNotFound if out of range.
Result<RunSpec> find_run(const StressPlan& plan, std::string_view id);
// A stable 64-bit seed for run `index` of a plan seeded with `plan_seed`
// (splitmix64), so that a rerun draws the same one.
uint64_t run_seed(uint64_t plan_seed, unsigned index);
// Fills {name} from values; an unknown name or a lone brace is an error.
Result<std::string> fill_template(std::string_view text, const std::map<std::string, std::string>& values);

}  // namespace vmpod::stress
