#include <vmpod/stress/report.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vmpod/base/histogram.h>

namespace vmpod::stress {

namespace {

using nlohmann::json;

constexpr Verdict kVerdicts[] = {Verdict::kPassed, Verdict::kFailed, Verdict::kTimedOut, Verdict::kError};

json run_json(const RunResult& run) {
  return {{"id", run.spec.id},
          {"index", run.spec.index},
          {"iteration", run.spec.iteration},
          {"clone-index", run.spec.clone},
          {"params", run.spec.params},
          {"seed", run.spec.seed},
          {"command", run.spec.command},
          {"clone", run.clone},
          {"verdict", verdict_name(run.judgement.verdict)},
          {"reason", run.judgement.reason},
          {"exit-code", run.exit_code ? json(*run.exit_code) : json(nullptr)},
          {"output", run.output},
          {"console", run.console},
          {"first-instruction-ms", run.first_instruction_ms},
          {"fork-ms", run.fork_ms},
          {"command-ms", run.command_ms},
          {"total-ms", run.total_ms},
          {"bytes-fetched", run.bytes_fetched},
          {"bytes-written", run.bytes_written},
          {"pages-held", run.pages_held},
          {"failure-snapshot", run.failure_snapshot},
          {"kept", run.kept}};
}

// An integer field: a JSON integer that fits. nlohmann's get<> would cast
// a float or an out-of-range number, which for a float is undefined.
template <class T>
T integer_at(const json& in, const char* key) {
  const json& value = in.at(key);
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<T>::max());
  constexpr auto kMin = static_cast<int64_t>(std::numeric_limits<T>::min());
  bool fits = false;
  if (value.is_number_unsigned()) {
    fits = value.get<uint64_t>() <= kMax;
  } else if (value.is_number_integer()) {
    auto number = value.get<int64_t>();
    fits = number < 0 ? number >= kMin : static_cast<uint64_t>(number) <= kMax;
  }
  if (!fits) throw std::invalid_argument(std::string(key) + " must be an integer in range");
  return value.get<T>();
}

RunResult run_from(const json& in) {
  RunResult run;
  run.spec.id = in.at("id").get<std::string>();
  run.spec.index = integer_at<unsigned>(in, "index");
  run.spec.iteration = integer_at<unsigned>(in, "iteration");
  run.spec.clone = integer_at<unsigned>(in, "clone-index");
  run.spec.params = in.at("params").get<std::map<std::string, std::string>>();
  run.spec.seed = integer_at<uint64_t>(in, "seed");
  run.spec.command = in.at("command").get<std::string>();
  run.clone = in.at("clone").get<std::string>();
  auto verdict = parse_verdict(in.at("verdict").get<std::string>());
  if (!verdict) throw std::invalid_argument(verdict.error().message());
  run.judgement = {*verdict, in.at("reason").get<std::string>()};
  if (!in.at("exit-code").is_null()) run.exit_code = integer_at<int>(in, "exit-code");
  run.output = in.at("output").get<std::string>();
  run.console = in.at("console").get<std::string>();
  run.first_instruction_ms = in.at("first-instruction-ms").get<double>();
  run.fork_ms = in.at("fork-ms").get<double>();
  run.command_ms = in.at("command-ms").get<double>();
  run.total_ms = in.at("total-ms").get<double>();
  run.bytes_fetched = integer_at<uint64_t>(in, "bytes-fetched");
  run.bytes_written = integer_at<uint64_t>(in, "bytes-written");
  run.pages_held = integer_at<uint64_t>(in, "pages-held");
  run.failure_snapshot = in.at("failure-snapshot").get<std::string>();
  run.kept = in.at("kept").get<bool>();
  return run;
}

// XML 1.0 text: escaped, and without the control bytes it cannot hold.
std::string xml_text(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default:
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') continue;
        out += static_cast<char>(c);
    }
  }
  return out;
}

std::string run_label(const RunResult& run) {
  std::string label = run.spec.id;
  for (const auto& [key, value] : run.spec.params) label += " " + key + "=" + value;
  return label;
}

// The timings of the runs whose command started: one that failed before
// (a fork refused, an agent that never answered) has none to count.
std::vector<double> values_of(const StressReport& report, double RunResult::*field) {
  std::vector<double> values;
  for (const auto& run : report.runs) {
    if (run.first_instruction_ms > 0) values.push_back(run.*field);
  }
  return values;
}

}  // namespace

std::string_view verdict_name(Verdict verdict) {
  switch (verdict) {
    case Verdict::kPassed: return "passed";
    case Verdict::kFailed: return "failed";
    case Verdict::kTimedOut: return "timed-out";
    case Verdict::kError: return "error";
  }
  return "error";
}

Result<Verdict> parse_verdict(std::string_view name) {
  for (Verdict verdict : kVerdicts) {
    if (verdict_name(verdict) == name) return verdict;
  }
  return fail(ErrorCode::kInvalidArgument, "unknown verdict '" + std::string(name) + "'");
}

Judgement judge_run(const RunObservation& seen, const FailurePlan& failure) {
  if (!seen.vmpod_error.empty()) return {Verdict::kError, seen.vmpod_error};
  if (seen.guest_panicked && failure.panic) return {Verdict::kFailed, "guest panicked"};
  if (seen.timed_out) return {Verdict::kTimedOut, "time limit reached"};
  if (!seen.exit_code) return {Verdict::kError, "no exit code"};
  const auto& ok = failure.ok_exit_codes;
  if (std::find(ok.begin(), ok.end(), *seen.exit_code) == ok.end()) {
    return {Verdict::kFailed, "exit code " + std::to_string(*seen.exit_code)};
  }
  for (const auto& pattern : failure.console_patterns) {
    if (seen.console.find(pattern) != std::string::npos || seen.output.find(pattern) != std::string::npos) {
      return {Verdict::kFailed, "console: '" + pattern + "'"};
    }
  }
  return {};
}

size_t StressReport::count(Verdict verdict) const {
  return static_cast<size_t>(
      std::count_if(runs.begin(), runs.end(), [&](const RunResult& run) { return run.judgement.verdict == verdict; }));
}

bool StressReport::passed() const { return !interrupted && count(Verdict::kPassed) == runs.size(); }

std::string report_json(const StressReport& report) {
  json runs = json::array();
  for (const auto& run : report.runs) runs.push_back(run_json(run));
  json counts = {{"total", report.runs.size()}};
  for (Verdict verdict : kVerdicts) counts[std::string(verdict_name(verdict))] = report.count(verdict);
  json out = {{"plan", report.plan_name},
              {"plan-path", report.plan_path},
              {"base-snapshot", report.base_snapshot},
              {"base-reused", report.base_reused},
              {"base-ms", report.base_ms},
              {"code-image", report.code_image},
              {"started-unix-ms", report.started_unix_ms},
              {"duration-ms", report.duration_ms},
              {"interrupted", report.interrupted},
              {"counts", counts},
              {"runs", runs}};
  // Output and consoles are the guests': not always UTF-8.
  return out.dump(2, ' ', false, json::error_handler_t::replace);
}

Result<StressReport> report_from_json(std::string_view text) {
  try {
    json in = json::parse(text);
    StressReport report;
    report.plan_name = in.at("plan").get<std::string>();
    report.plan_path = in.at("plan-path").get<std::string>();
    report.base_snapshot = in.at("base-snapshot").get<std::string>();
    report.base_reused = in.at("base-reused").get<bool>();
    report.base_ms = in.at("base-ms").get<double>();
    report.code_image = in.at("code-image").get<std::string>();
    report.started_unix_ms = integer_at<int64_t>(in, "started-unix-ms");
    report.duration_ms = in.at("duration-ms").get<double>();
    report.interrupted = in.at("interrupted").get<bool>();
    for (const auto& run : in.at("runs")) report.runs.push_back(run_from(run));
    return report;
  } catch (const std::exception& error) {
    return fail(ErrorCode::kInvalidArgument, std::string("malformed stress report: ") + error.what());
  }
}

std::string junit_xml(const StressReport& report) {
  std::string body;
  for (const auto& run : report.runs) {
    body += fmt::format("    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3f}\">\n", xml_text(report.plan_name),
                        xml_text(run_label(run)), run.total_ms / 1000.0);
    switch (run.judgement.verdict) {
      case Verdict::kPassed: break;
      case Verdict::kFailed:
      case Verdict::kTimedOut:
        body += fmt::format("      <failure message=\"{}\">{}</failure>\n", xml_text(run.judgement.reason),
                            xml_text(run.console));
        break;
      case Verdict::kError:
        body += fmt::format("      <error message=\"{}\">{}</error>\n", xml_text(run.judgement.reason),
                            xml_text(run.console));
        break;
    }
    body += "      <system-out>" + xml_text(run.output) + "</system-out>\n    </testcase>\n";
  }
  size_t failures = report.count(Verdict::kFailed) + report.count(Verdict::kTimedOut);
  return fmt::format("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n"
                     "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3f}\">\n{}"
                     "  </testsuite>\n</testsuites>\n",
                     xml_text(report.plan_name), report.runs.size(), failures, report.count(Verdict::kError),
                     report.duration_ms / 1000.0, body);
}

std::string summary_table(const StressReport& report) {
  std::string out = fmt::format("plan {}: base snapshot {} ({})\n", report.plan_name, report.base_snapshot,
                                report.base_reused ? "reused" : fmt::format("built in {:.1f} s", report.base_ms / 1000));
  bool header = false;
  for (const auto& run : report.runs) {
    if (run.judgement.verdict == Verdict::kPassed) continue;
    if (!header) {
      out += fmt::format("{:<24} {:<10} {:<28} {}\n", "RUN", "VERDICT", "REASON", "SNAPSHOT");
      header = true;
    }
    std::string id = run.failure_snapshot.empty() ? run.clone : run.failure_snapshot;
    out += fmt::format("{:<24} {:<10} {:<28} {}{}\n", id.empty() ? run.spec.id : id, verdict_name(run.judgement.verdict),
                       run.judgement.reason, run.failure_snapshot.empty() ? "-" : run.failure_snapshot,
                       run.kept ? " (kept running)" : "");
  }
  double minutes = report.duration_ms / 60000.0;
  out += fmt::format("{} runs: {} passed, {} failed, {} timed out, {} errors in {:.1f} s ({:.1f} runs/min){}\n",
                     report.runs.size(), report.count(Verdict::kPassed), report.count(Verdict::kFailed),
                     report.count(Verdict::kTimedOut), report.count(Verdict::kError), report.duration_ms / 1000,
                     minutes > 0 ? static_cast<double>(report.runs.size()) / minutes : 0.0,
                     report.interrupted ? ", interrupted" : "");
  auto first = values_of(report, &RunResult::first_instruction_ms);
  auto command = values_of(report, &RunResult::command_ms);
  out += fmt::format("fork to first instruction: p50 {:.0f} ms, p99 {:.0f} ms; command: p50 {:.0f} ms, p99 {:.0f} ms\n",
                     percentile(first, 0.5), percentile(first, 0.99), percentile(command, 0.5),
                     percentile(command, 0.99));
  return out;
}

}  // namespace vmpod::stress
