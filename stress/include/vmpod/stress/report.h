// What a stress run found: a verdict per run with what it was judged on,
// and the report of the whole plan as JSON (the record `vmpod stress
// replay` reads back), JUnit XML for CI systems and a table for people.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/stress/plan.h>

namespace vmpod::stress {

enum class Verdict { kPassed, kFailed, kTimedOut, kError };
std::string_view verdict_name(Verdict verdict);  // "passed", "failed", "timed-out", "error"
Result<Verdict> parse_verdict(std::string_view name);

// What the harness saw of one run, before judging it.
struct RunObservation {
  std::optional<int> exit_code;  // none when the command did not finish
  bool timed_out = false;        // killed at the plan's time limit
  bool guest_panicked = false;   // the clone's kernel panicked or its QEMU died
  std::string output;            // the command's stdout and stderr
  std::string console;           // the clone's serial console after the fork
  std::string vmpod_error;       // vmpod itself failed around the run
};

struct Judgement {
  Verdict verdict = Verdict::kPassed;
  std::string reason;  // empty when passed
};

// In order: a vmpod error, a panic (when the plan counts it), a time-out,
// an exit code outside the plan's, a console pattern in the console or
// the output.
Judgement judge_run(const RunObservation& observation, const FailurePlan& failure);

struct RunResult {
  RunSpec spec;
  std::string clone;           // the VM that ran it
  Judgement judgement;
  std::optional<int> exit_code;
  std::string output;
  std::string console;
  // From the fork request to the clone's agent starting the command; the
  // command's own time; the whole run, fork to destroy.
  double first_instruction_ms = 0;
  double fork_ms = 0;
  double command_ms = 0;
  double total_ms = 0;
  // The clone's memory counters: RAM its compute pod read from the memory
  // pods and wrote back, and the pages its own regions held at the end.
  uint64_t bytes_fetched = 0;
  uint64_t bytes_written = 0;
  uint64_t pages_held = 0;
  std::string failure_snapshot;  // the failing clone, snapshotted
  bool kept = false;             // the failing clone is still running (--keep-failed)
};

struct StressReport {
  std::string plan_name;
  std::string plan_path;
  std::string base_snapshot;   // every clone forked from it
  bool base_reused = false;    // found on the vmm, not booted
  double base_ms = 0;          // booting, setup and snapshot; 0 when reused
  std::string code_image;      // the code under test as the clones saw it
  int64_t started_unix_ms = 0;
  double duration_ms = 0;
  bool interrupted = false;    // stopped by a signal before every run ended
  std::vector<RunResult> runs;

  size_t count(Verdict verdict) const;
  bool passed() const;  // every run passed and none is missing
};

std::string report_json(const StressReport& report);
Result<StressReport> report_from_json(std::string_view text);
std::string junit_xml(const StressReport& report);
// A line per failed run, then counts, rate and the timing percentiles.
std::string summary_table(const StressReport& report);

}  // namespace vmpod::stress
