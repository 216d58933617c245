// Feeds arbitrary bytes to the stress plan's two readers: as a plan's TOML
// to parse_plan, and, when it loads, to expand_runs, fill_template and
// find_run, which must agree with each other and never refuse a plan that
// loaded; and as a report's JSON to report_from_json, whose report must
// write out and read back to the same JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/stress/plan.h>
#include <vmpod/stress/report.h>

using namespace vmpod;
using namespace vmpod::stress;

namespace {

// The runs whose commands are filled again and looked up by id.
constexpr size_t kCheckedRuns = 4;
// Expanding is linear in runs times command length; a loaded plan may ask
// for 100000 runs, which is tested in the unit tests, not on every input.
constexpr uint64_t kMaxExpandedBytes = uint64_t{1} << 22;

uint64_t planned_runs(const StressPlan& plan) {
  uint64_t runs = uint64_t{plan.test.clones} * plan.test.iterations;
  for (const auto& [key, values] : plan.test.sweep) runs *= values.size();
  return runs;
}

std::map<std::string, std::string> values_of(const StressPlan& plan, const RunSpec& run) {
  std::map<std::string, std::string> values = run.params;
  values["seed"] = std::to_string(run.seed);
  values["run"] = run.id;
  values["iteration"] = std::to_string(run.iteration);
  values["clone"] = std::to_string(run.clone);
  values["code"] = plan.code.mount;
  return values;
}

bool same_run(const RunSpec& a, const RunSpec& b) {
  return a.index == b.index && a.id == b.id && a.iteration == b.iteration && a.clone == b.clone &&
         a.params == b.params && a.seed == b.seed && a.command == b.command;
}

void check_plan(std::string_view text) {
  auto plan = parse_plan(text, "/tmp", "fuzz");
  if (!plan) {
    if (plan.error().message().rfind("fuzz:", 0) != 0) std::abort();  // an error that names no file:line
    return;
  }
  if (plan->test.command.empty() || plan->name.empty()) std::abort();
  if (!plan->code.dir.empty() && plan->code.dir[0] != '/') std::abort();
  uint64_t runs = planned_runs(*plan);
  if (runs == 0 || runs > 100000) std::abort();  // parse_plan keeps to its limit
  if (runs * (plan->test.command.size() + 64) > kMaxExpandedBytes) return;

  auto expanded = expand_runs(*plan);
  if (!expanded || expanded->size() != runs) std::abort();  // a plan that loaded expands
  for (size_t i = 0; i < expanded->size() && i < kCheckedRuns; ++i) {
    const RunSpec& run = (*expanded)[i];
    if (run.index != i || run.seed != run_seed(plan->test.seed, run.index)) std::abort();
    auto filled = fill_template(plan->test.command, values_of(*plan, run));
    if (!filled || *filled != run.command) std::abort();
    auto found = find_run(*plan, run.id);
    if (!found || !same_run(*found, run)) std::abort();
  }
  const RunSpec& last = expanded->back();
  if (last.iteration != plan->test.iterations - 1 || last.clone != plan->test.clones - 1) std::abort();
}

void check_report(std::string_view text) {
  auto report = report_from_json(text);
  if (!report) return;
  std::string json = report_json(*report);
  (void)junit_xml(*report);
  (void)summary_table(*report);
  // What was read once writes out stably. (A number that was not finite is
  // written as null and not read back: that is refused, not a crash.)
  auto again = report_from_json(json);
  if (again && report_json(*again) != json) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  check_plan(text);
  check_report(text);
  return 0;
}
