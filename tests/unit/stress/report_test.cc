// What a stress run found: judge_run's order of reasons, verdict names, the
// JSON report read back field by field, JUnit XML escaping and counts, the
// summary table.
#include <criterion/criterion.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <vmpod/stress/report.h>

using namespace vmpod;
using namespace vmpod::stress;

namespace {

size_t occurrences(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// A run that passes under the default FailurePlan.
RunObservation clean() {
  RunObservation seen;
  seen.exit_code = 0;
  seen.output = "all good\n";
  seen.console = "[    0.1] booted\n";
  return seen;
}

FailurePlan strict() {
  FailurePlan failure;
  failure.ok_exit_codes = {0, 3};
  failure.console_patterns = {"BUG:", "Oops"};
  return failure;
}

RunResult make_run(unsigned index, Verdict verdict, const std::string& reason) {
  RunResult run;
  run.spec.index = index;
  run.spec.id = "r000" + std::to_string(index + 1);
  run.spec.iteration = index / 2;
  run.spec.clone = index % 2;
  run.spec.params = {{"mode", "vm"}, {"n", std::to_string(index)}};
  run.spec.seed = 0xFEDCBA9876543210ull + index;  // past INT64_MAX
  run.spec.command = "sh /code/run.sh \"vm\" " + std::to_string(index);
  run.clone = "st-0badf00d-" + run.spec.id + "-0";
  run.judgement = {verdict, reason};
  run.exit_code = verdict == Verdict::kPassed ? std::optional<int>(0) : std::nullopt;
  run.output = "out " + std::to_string(index) + "\n\ttab \"quoted\" \\ back\n";
  run.console = "console \xc3\xa9\xe2\x82\xac \x1b[0m";
  run.first_instruction_ms = 100.25 + index;
  run.fork_ms = 0.1 + index;
  run.command_ms = 1e-9 + 1000 * index;
  run.total_ms = 1234.5678 + index;
  run.bytes_fetched = UINT64_MAX - index;
  run.bytes_written = 4096ull * index;
  run.pages_held = index;
  return run;
}

StressReport make_report() {
  StressReport report;
  report.plan_name = "soak";
  report.plan_path = "/plans/soak.toml";
  report.base_snapshot = "stress-0123abcd";
  report.base_reused = false;
  report.base_ms = 12345.5;
  report.code_image = "/var/lib/vmpod/st-0badf00d/code.sqfs";
  report.started_unix_ms = 1700000000123;
  report.duration_ms = 61000;
  report.interrupted = false;
  report.runs.push_back(make_run(0, Verdict::kPassed, ""));
  report.runs.push_back(make_run(1, Verdict::kFailed, "exit code 2"));
  report.runs.back().exit_code = 2;
  report.runs.back().failure_snapshot = "st-0badf00d-r0002";
  report.runs.back().kept = true;
  report.runs.push_back(make_run(2, Verdict::kTimedOut, "time limit reached"));
  report.runs.push_back(make_run(3, Verdict::kError, "fork failed: no memory pod"));
  report.runs.push_back(make_run(4, Verdict::kPassed, ""));
  report.runs.back().exit_code = -1;
  return report;
}

void expect_same_run(const RunResult& got, const RunResult& want) {
  const char* id = want.spec.id.c_str();
  cr_expect_eq(got.spec.index, want.spec.index, "%s index", id);
  cr_expect_eq(got.spec.id, want.spec.id, "%s id", id);
  cr_expect_eq(got.spec.iteration, want.spec.iteration, "%s iteration", id);
  cr_expect_eq(got.spec.clone, want.spec.clone, "%s clone index", id);
  cr_expect(got.spec.params == want.spec.params, "%s params", id);
  cr_expect_eq(got.spec.seed, want.spec.seed, "%s seed", id);
  cr_expect_eq(got.spec.command, want.spec.command, "%s command", id);
  cr_expect_eq(got.clone, want.clone, "%s clone", id);
  cr_expect_eq(got.judgement.verdict, want.judgement.verdict, "%s verdict", id);
  cr_expect_eq(got.judgement.reason, want.judgement.reason, "%s reason", id);
  cr_expect(got.exit_code == want.exit_code, "%s exit code", id);
  cr_expect_eq(got.output, want.output, "%s output", id);
  cr_expect_eq(got.console, want.console, "%s console", id);
  cr_expect_eq(got.first_instruction_ms, want.first_instruction_ms, "%s first instruction", id);
  cr_expect_eq(got.fork_ms, want.fork_ms, "%s fork", id);
  cr_expect_eq(got.command_ms, want.command_ms, "%s command ms", id);
  cr_expect_eq(got.total_ms, want.total_ms, "%s total", id);
  cr_expect_eq(got.bytes_fetched, want.bytes_fetched, "%s bytes fetched", id);
  cr_expect_eq(got.bytes_written, want.bytes_written, "%s bytes written", id);
  cr_expect_eq(got.pages_held, want.pages_held, "%s pages held", id);
  cr_expect_eq(got.failure_snapshot, want.failure_snapshot, "%s failure snapshot", id);
  cr_expect_eq(got.kept, want.kept, "%s kept", id);
}

}  // namespace

Test(report, judge_passes_a_clean_run) {
  Judgement got = judge_run(clean(), FailurePlan{});
  cr_expect_eq(got.verdict, Verdict::kPassed);
  cr_expect(got.reason.empty(), "'%s'", got.reason.c_str());
  RunObservation three = clean();
  three.exit_code = 3;
  cr_expect_eq(judge_run(three, strict()).verdict, Verdict::kPassed, "3 is in ok_exit_codes");
}

Test(report, judge_precedence) {
  // Everything wrong at once: each reason hides the ones after it.
  RunObservation seen;
  seen.vmpod_error = "fork failed: memory pod mem0 lost";
  seen.guest_panicked = true;
  seen.timed_out = true;
  seen.exit_code = std::nullopt;
  seen.console = "BUG: unable to handle page fault";
  FailurePlan failure = strict();

  Judgement got = judge_run(seen, failure);
  cr_expect_eq(got.verdict, Verdict::kError);
  cr_expect_eq(got.reason, seen.vmpod_error);

  seen.vmpod_error.clear();
  got = judge_run(seen, failure);
  cr_expect_eq(got.verdict, Verdict::kFailed);
  cr_expect_eq(got.reason, std::string("guest panicked"));

  failure.panic = false;  // a panic the plan does not count
  got = judge_run(seen, failure);
  cr_expect_eq(got.verdict, Verdict::kTimedOut);
  cr_expect_eq(got.reason, std::string("time limit reached"));

  seen.timed_out = false;
  got = judge_run(seen, failure);
  cr_expect_eq(got.verdict, Verdict::kError);
  cr_expect_eq(got.reason, std::string("no exit code"));

  seen.exit_code = 139;
  got = judge_run(seen, failure);
  cr_expect_eq(got.verdict, Verdict::kFailed);
  cr_expect_eq(got.reason, std::string("exit code 139"));

  seen.exit_code = 3;
  got = judge_run(seen, failure);
  cr_expect_eq(got.verdict, Verdict::kFailed);
  cr_expect_eq(got.reason, std::string("console: 'BUG:'"));

  seen.console = "fine";
  got = judge_run(seen, failure);
  cr_expect_eq(got.verdict, Verdict::kPassed, "'%s'", got.reason.c_str());

  // A panic that does count, with everything else fine.
  failure.panic = true;
  RunObservation panicked = clean();
  panicked.guest_panicked = true;
  got = judge_run(panicked, failure);
  cr_expect_eq(got.verdict, Verdict::kFailed);
  cr_expect_eq(got.reason, std::string("guest panicked"));
  // A time-out with an exit code is still a time-out.
  RunObservation late = clean();
  late.timed_out = true;
  cr_expect_eq(judge_run(late, failure).verdict, Verdict::kTimedOut);
}

Test(report, judge_exit_codes) {
  FailurePlan failure;
  failure.ok_exit_codes = {0, 1};
  for (int code : {0, 1}) {
    RunObservation seen = clean();
    seen.exit_code = code;
    cr_expect_eq(judge_run(seen, failure).verdict, Verdict::kPassed, "exit %d", code);
  }
  for (int code : {2, 255, -1}) {
    RunObservation seen = clean();
    seen.exit_code = code;
    Judgement got = judge_run(seen, failure);
    cr_expect_eq(got.verdict, Verdict::kFailed, "exit %d", code);
    cr_expect_eq(got.reason, "exit code " + std::to_string(code));
  }
  failure.ok_exit_codes = {1};
  cr_expect_eq(judge_run(clean(), failure).verdict, Verdict::kFailed, "0 is not ok unless listed");
}

Test(report, judge_console_patterns_in_console_or_output) {
  FailurePlan failure = strict();
  RunObservation in_console = clean();
  in_console.console = "...\n[  12.3] Oops: 0002 [#1] SMP\n";
  Judgement got = judge_run(in_console, failure);
  cr_expect_eq(got.verdict, Verdict::kFailed);
  cr_expect_eq(got.reason, std::string("console: 'Oops'"));

  RunObservation in_output = clean();
  in_output.output = "stress-ng: BUG: bad page";
  got = judge_run(in_output, failure);
  cr_expect_eq(got.verdict, Verdict::kFailed);
  cr_expect_eq(got.reason, std::string("console: 'BUG:'"));

  // The first pattern of the plan is named when several match.
  RunObservation both = clean();
  both.console = "Oops then BUG:";
  cr_expect_eq(judge_run(both, failure).reason, std::string("console: 'BUG:'"));

  RunObservation case_differs = clean();
  case_differs.console = "bug: oops";
  cr_expect_eq(judge_run(case_differs, failure).verdict, Verdict::kPassed, "patterns are case-sensitive substrings");
}

Test(report, verdict_names_round_trip) {
  struct Row {
    Verdict verdict;
    const char* name;
  };
  const Row rows[] = {{Verdict::kPassed, "passed"},
                      {Verdict::kFailed, "failed"},
                      {Verdict::kTimedOut, "timed-out"},
                      {Verdict::kError, "error"}};
  for (const Row& row : rows) {
    cr_expect_eq(verdict_name(row.verdict), std::string_view(row.name));
    auto back = parse_verdict(row.name);
    cr_expect(back.has_value(), "%s", row.name);
    if (back) cr_expect_eq(*back, row.verdict, "%s", row.name);
  }
  for (const char* name : {"", "pass", "Passed", "timed_out", "timeout", "errors", "passed "}) {
    auto got = parse_verdict(name);
    cr_expect(!got.has_value(), "'%s' parsed", name);
    if (!got) {
      cr_expect_eq(got.error().code(), ErrorCode::kInvalidArgument);
      cr_expect(contains(got.error().message(), std::string("'") + name + "'"), "%s", got.error().message().c_str());
    }
  }
}

Test(report, counts_and_passed) {
  StressReport report = make_report();
  cr_expect_eq(report.count(Verdict::kPassed), 2u);
  cr_expect_eq(report.count(Verdict::kFailed), 1u);
  cr_expect_eq(report.count(Verdict::kTimedOut), 1u);
  cr_expect_eq(report.count(Verdict::kError), 1u);
  cr_expect(!report.passed());

  StressReport good;
  good.runs.push_back(make_run(0, Verdict::kPassed, ""));
  good.runs.push_back(make_run(1, Verdict::kPassed, ""));
  cr_expect(good.passed());
  good.interrupted = true;
  cr_expect(!good.passed(), "an interrupted report has runs missing");
  cr_expect(StressReport{}.passed(), "no runs, none failed");
}

Test(report, json_round_trip_keeps_every_field) {
  StressReport want = make_report();
  std::string text = report_json(want);
  auto got = report_from_json(text);
  cr_assert(got.has_value(), "%s\n%s", got ? "" : got.error().message().c_str(), text.c_str());
  cr_expect_eq(got->plan_name, want.plan_name);
  cr_expect_eq(got->plan_path, want.plan_path);
  cr_expect_eq(got->base_snapshot, want.base_snapshot);
  cr_expect_eq(got->base_reused, want.base_reused);
  cr_expect_eq(got->base_ms, want.base_ms);
  cr_expect_eq(got->code_image, want.code_image);
  cr_expect_eq(got->started_unix_ms, want.started_unix_ms);
  cr_expect_eq(got->duration_ms, want.duration_ms);
  cr_expect_eq(got->interrupted, want.interrupted);
  cr_assert_eq(got->runs.size(), want.runs.size());
  for (size_t i = 0; i < want.runs.size(); ++i) expect_same_run(got->runs[i], want.runs[i]);
  cr_expect_eq(report_json(*got), text, "a report read back writes the same JSON");

  // The other values of the flags, and extremes.
  want.base_reused = true;
  want.interrupted = true;
  want.base_ms = 0;
  want.started_unix_ms = -1;
  want.runs.resize(1);
  want.runs[0].kept = true;
  want.runs[0].spec.seed = UINT64_MAX;
  want.runs[0].spec.params.clear();
  want.runs[0].exit_code = 255;
  got = report_from_json(report_json(want));
  cr_assert(got.has_value());
  cr_expect(got->base_reused && got->interrupted);
  cr_expect_eq(got->started_unix_ms, -1);
  expect_same_run(got->runs[0], want.runs[0]);

  auto empty = report_from_json(report_json(StressReport{}));
  cr_assert(empty.has_value(), "%s", empty ? "" : empty.error().message().c_str());
  cr_expect(empty->runs.empty());
}

Test(report, json_names_and_counts) {
  std::string text = report_json(make_report());
  for (const char* key : {"\"plan\"", "\"plan-path\"", "\"base-snapshot\"", "\"base-reused\"", "\"base-ms\"",
                          "\"code-image\"", "\"started-unix-ms\"", "\"duration-ms\"", "\"interrupted\"", "\"counts\"",
                          "\"runs\"", "\"clone-index\"", "\"exit-code\"", "\"first-instruction-ms\"", "\"fork-ms\"",
                          "\"command-ms\"", "\"total-ms\"", "\"bytes-fetched\"", "\"bytes-written\"",
                          "\"pages-held\"", "\"failure-snapshot\"", "\"kept\"", "\"verdict\": \"timed-out\""}) {
    cr_expect(contains(text, key), "no %s in the report", key);
  }
  cr_expect(contains(text, "\"exit-code\": null"), "a run without an exit code has null");
  cr_expect(contains(text, "\"total\": 5") && contains(text, "\"passed\": 2") && contains(text, "\"failed\": 1") &&
                contains(text, "\"timed-out\": 1") && contains(text, "\"error\": 1"),
            "counts wrong:\n%s", text.c_str());
}

Test(report, json_replaces_bytes_that_are_not_utf8) {
  StressReport report = make_report();
  report.runs[0].console = "ok \xff\xfe end";
  std::string text = report_json(report);
  auto got = report_from_json(text);
  cr_assert(got.has_value(), "%s", got ? "" : got.error().message().c_str());
  cr_expect_eq(got->runs[0].console, std::string("ok \xef\xbf\xbd\xef\xbf\xbd end"), "'%s'",
               got->runs[0].console.c_str());
}

Test(report, json_refuses_malformed_reports) {
  std::string good = report_json(make_report());
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    size_t at = text.find(from);
    cr_assert(at != std::string::npos, "%s", from.c_str());
    return text.replace(at, from.size(), to);
  };
  const std::string bad[] = {
      "",
      "{",
      "[]",
      "null",
      "{}",
      good.substr(0, good.size() / 2),
      replaced("\"plan\": \"soak\"", "\"plan\": 3"),
      replaced("\"base-reused\": false", "\"base-reused\": \"no\""),
      replaced("\"verdict\": \"timed-out\"", "\"verdict\": \"timeout\""),
      replaced("\"kept\": true", "\"kept\": 1"),
      replaced("\"plan-path\"", "\"plan_path\""),
      replaced("\"clone-index\": 0", "\"clone-idx\": 0"),
      replaced("\"seed\": ", "\"seed\": \"1\", \"x\": "),
      replaced("\"runs\": [", "\"runs\": [3, "),
      // Integers must be integers that fit: a float or a number out of
      // range would be cast, undefined for a float.
      replaced("\"seed\": 18364758544493064720", "\"seed\": 18446744073709551616"),
      replaced("\"seed\": 18364758544493064720", "\"seed\": 1.8e19"),
      replaced("\"seed\": 18364758544493064720", "\"seed\": -1"),
      replaced("\"index\": 0", "\"index\": -1"),
      replaced("\"index\": 0", "\"index\": 4294967296"),
      replaced("\"iteration\": 0", "\"iteration\": 0.5"),
      replaced("\"exit-code\": 2", "\"exit-code\": 1e10"),
      replaced("\"exit-code\": 2", "\"exit-code\": 2147483648"),
      replaced("\"exit-code\": 2", "\"exit-code\": 2.0"),
      replaced("\"pages-held\": 0", "\"pages-held\": 1e300"),
      replaced("\"started-unix-ms\": 1700000000123", "\"started-unix-ms\": 9223372036854775808"),
      replaced("\"started-unix-ms\": 1700000000123", "\"started-unix-ms\": 1.7e12"),
  };
  for (const std::string& text : bad) {
    auto got = report_from_json(text);
    cr_expect(!got.has_value(), "accepted:\n%.200s", text.c_str());
    if (!got) {
      cr_expect_eq(got.error().code(), ErrorCode::kInvalidArgument);
      cr_expect(got.error().message().find("malformed stress report: ") == 0, "%s", got.error().message().c_str());
    }
  }
}

Test(report, junit_escapes_and_counts) {
  StressReport report = make_report();
  report.plan_name = "a<b>&\"c\"";
  report.runs[1].judgement.reason = "console: '<oops & \"bug\">'";
  report.runs[1].console = "</failure><x>\x01\x02 \x7f";
  report.runs[0].output = "<system-out>]]> & \"q\"\ttab\r\n";
  report.runs[3].spec.params = {{"k", "<&>"}};
  std::string xml = junit_xml(report);

  cr_expect(xml.find("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n") == 0, "%s", xml.c_str());
  cr_expect(contains(xml, "</testsuites>\n"));
  cr_expect(contains(xml, "<testsuite name=\"a&lt;b&gt;&amp;&quot;c&quot;\" tests=\"5\" failures=\"2\" errors=\"1\" "
                          "time=\"61.000\">"),
            "%s", xml.c_str());
  cr_expect_eq(occurrences(xml, "<testcase "), 5u);
  cr_expect_eq(occurrences(xml, "</testcase>"), 5u);
  cr_expect_eq(occurrences(xml, "<failure "), 2u, "failed and timed-out runs are failures");
  cr_expect_eq(occurrences(xml, "</failure>"), 2u, "a console cannot close the element");
  cr_expect_eq(occurrences(xml, "<error "), 1u);
  cr_expect_eq(occurrences(xml, "<system-out>"), 5u, "an output cannot open another element");
  cr_expect(contains(xml, "<testcase classname=\"a&lt;b&gt;&amp;&quot;c&quot;\" name=\"r0001 mode=vm n=0\" "
                          "time=\"1.235\">"),
            "%s", xml.c_str());
  cr_expect(contains(xml, "<failure message=\"console: '&lt;oops &amp; &quot;bug&quot;&gt;'\">&lt;/failure&gt;&lt;x&gt; "
                          "\x7f</failure>"),
            "%s", xml.c_str());
  cr_expect(contains(xml, "<failure message=\"time limit reached\">"), "%s", xml.c_str());
  cr_expect(contains(xml, "<error message=\"fork failed: no memory pod\">"), "%s", xml.c_str());
  cr_expect(contains(xml, "name=\"r0004 k=&lt;&amp;&gt;\""), "%s", xml.c_str());
  cr_expect(contains(xml, "<system-out>&lt;system-out&gt;]]&gt; &amp; &quot;q&quot;\ttab\r\n</system-out>"), "%s",
            xml.c_str());
  cr_expect(!contains(xml, "\x01") && !contains(xml, "\x02") && !contains(xml, "\x1b"),
            "control bytes XML cannot hold are dropped");
  cr_expect(contains(xml, "\xc3\xa9\xe2\x82\xac"), "UTF-8 text is kept");
  // Every '&' starts an entity.
  for (size_t at = xml.find('&'); at != std::string::npos; at = xml.find('&', at + 1)) {
    std::string rest = xml.substr(at, 6);
    cr_expect(rest.find("&lt;") == 0 || rest.find("&gt;") == 0 || rest.find("&amp;") == 0 ||
                  rest.find("&quot;") == 0,
              "a bare '&' at %zu: %s", at, rest.c_str());
  }
}

Test(report, junit_empty_report) {
  StressReport report;
  report.plan_name = "p";
  std::string xml = junit_xml(report);
  cr_expect(contains(xml, "<testsuite name=\"p\" tests=\"0\" failures=\"0\" errors=\"0\" time=\"0.000\">"), "%s",
            xml.c_str());
  cr_expect_eq(occurrences(xml, "<testcase"), 0u);
}

Test(report, summary_table_lists_failures_and_counts) {
  StressReport report = make_report();
  for (size_t i = 0; i < report.runs.size(); ++i) {
    report.runs[i].first_instruction_ms = 100.0 * static_cast<double>(i + 1);  // 100 .. 500
    report.runs[i].command_ms = 10.0 * static_cast<double>(i + 1);             // 10 .. 50
  }
  report.runs[2].clone.clear();  // neither clone nor snapshot: the run id
  std::string table = summary_table(report);

  cr_expect(table.find("plan soak: base snapshot stress-0123abcd (built in 12.3 s)\n") == 0, "%s", table.c_str());
  cr_expect_eq(occurrences(table, "RUN"), 1u, "one header: %s", table.c_str());
  cr_expect(contains(table, "VERDICT") && contains(table, "REASON") && contains(table, "SNAPSHOT"));
  // A line per run that did not pass, none for those that did.
  cr_expect(!contains(table, "r0001") && !contains(table, "r0005"), "%s", table.c_str());
  cr_expect(contains(table, "st-0badf00d-r0002 "), "a failure snapshot names the run");
  cr_expect(contains(table, "failed     exit code 2"), "%s", table.c_str());
  cr_expect(contains(table, "st-0badf00d-r0002 (kept running)\n"), "%s", table.c_str());
  cr_expect(contains(table, "r0003 "), "%s", table.c_str());
  cr_expect(contains(table, "timed-out  time limit reached"), "%s", table.c_str());
  cr_expect(contains(table, "st-0badf00d-r0004-0 "), "no snapshot: the clone: %s", table.c_str());
  cr_expect(contains(table, "error      fork failed: no memory pod"), "%s", table.c_str());
  cr_expect_eq(occurrences(table, " -\n"), 2u, "runs without a snapshot show '-': %s", table.c_str());
  cr_expect(contains(table, "5 runs: 2 passed, 1 failed, 1 timed out, 1 errors in 61.0 s (4.9 runs/min)\n"), "%s",
            table.c_str());
  cr_expect(contains(table, "fork to first instruction: p50 300 ms, p99 500 ms; command: p50 30 ms, p99 50 ms\n"), "%s",
            table.c_str());
}

Test(report, summary_table_reused_interrupted_and_empty) {
  StressReport report;
  report.plan_name = "p";
  report.base_snapshot = "stress-1";
  report.base_reused = true;
  report.interrupted = true;
  std::string table = summary_table(report);
  cr_expect(contains(table, "plan p: base snapshot stress-1 (reused)\n"), "%s", table.c_str());
  cr_expect(!contains(table, "RUN"), "no failures, no header: %s", table.c_str());
  cr_expect(contains(table, "0 runs: 0 passed, 0 failed, 0 timed out, 0 errors in 0.0 s (0.0 runs/min), interrupted\n"),
            "%s", table.c_str());
  cr_expect(contains(table, "p50 0 ms, p99 0 ms; command: p50 0 ms, p99 0 ms"), "%s", table.c_str());

  report.runs.push_back(make_run(0, Verdict::kPassed, ""));
  report.interrupted = false;
  report.duration_ms = 30000;
  table = summary_table(report);
  cr_expect(!contains(table, "RUN"), "%s", table.c_str());
  cr_expect(!contains(table, "interrupted"), "%s", table.c_str());
  cr_expect(contains(table, "1 runs: 1 passed, 0 failed, 0 timed out, 0 errors in 30.0 s (2.0 runs/min)\n"), "%s",
            table.c_str());
}

