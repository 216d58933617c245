// The stress plan: parse_plan reading every key of a full plan and refusing,
// with file:line and the key, what a person gets wrong; expand_runs giving
// every run its place, id, seed and command; fill_template and find_run.
#include <criterion/criterion.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <vmpod/stress/plan.h>

using namespace vmpod;
using namespace vmpod::stress;
using std::chrono::milliseconds;

namespace {

constexpr const char* kSource = "plans/soak.toml";
constexpr const char* kBaseDir = "/plans/dir";

Result<StressPlan> parse(const std::string& text) { return parse_plan(text, kBaseDir, kSource); }

// Every key, none at its default. Line numbers matter: errors name them.
constexpr const char* kFullPlan = R"(name = "soak"

[guest]
kernel = "images/bzImage"
initrd = "/abs/initrd.img"
memory = "1G"
cpus = 4
append = "quiet loglevel=3"

[base]
setup = "apt-get install -y stress-ng"
ready = "test -e /run/ready"
setup_timeout = "90s"
ready_timeout = 45

[code]
dir = "code/../src"
mount = "/opt/code"

[test]
command = "run --seed {seed} --mode {mode} --n {n} --run {run} --it {iteration} --clone {clone} --in {code} {{literal}}"
clones = 3
iterations = 2
parallel = 2
time_limit = "500ms"
seed = 42

[test.sweep]
mode = ["vm", "cpu"]
n = [1, "two", 3]

[failure]
ok_exit_codes = [0, 3, "7"]
console_patterns = ["BUG:", "Oops", 42]
panic = false
)";

// A minimal plan with extra lines appended to its [test] table.
std::string test_plan(const std::string& extra) { return "[test]\ncommand = \"true\"\n" + extra; }

// The error of a plan that must not load.
std::string error_of(const std::string& text) {
  auto plan = parse(text);
  cr_assert(!plan.has_value(), "plan loaded:\n%s", text.c_str());
  cr_expect_eq(plan.error().code(), ErrorCode::kInvalidArgument, "%s", plan.error().message().c_str());
  return plan.error().message();
}

void expect_error(const std::string& text, const std::string& want) {
  std::string got = error_of(text);
  cr_expect(got.find(want) != std::string::npos, "error '%s' lacks '%s' for:\n%s", got.c_str(), want.c_str(),
            text.c_str());
}

StressPlan plan_of(const std::string& text) {
  auto plan = parse(text);
  cr_assert(plan.has_value(), "%s", plan ? "" : plan.error().message().c_str());
  return *plan;
}

std::string sweep_of(size_t keys, size_t values) {
  std::string text = "[test]\ncommand = \"true\"\n[test.sweep]\n";
  for (size_t k = 0; k < keys; ++k) {
    text += "k" + std::to_string(k) + " = [";
    for (size_t v = 0; v < values; ++v) text += (v ? ", " : "") + std::to_string(v);
    text += "]\n";
  }
  return text;
}

}  // namespace

Test(plan, full_plan_reads_every_key) {
  StressPlan plan = plan_of(kFullPlan);
  cr_expect(plan.path.empty(), "parse_plan sets no path: '%s'", plan.path.c_str());
  cr_expect_eq(plan.name, std::string("soak"));

  cr_expect_eq(plan.guest.kernel, std::string("/plans/dir/images/bzImage"));
  cr_expect_eq(plan.guest.initrd, std::string("/abs/initrd.img"));
  cr_expect_eq(plan.guest.memory_bytes, uint64_t{1} << 30);
  cr_expect_eq(plan.guest.cpus, 4u);
  cr_expect_eq(plan.guest.append, std::string("quiet loglevel=3"));

  cr_expect_eq(plan.base.setup, std::string("apt-get install -y stress-ng"));
  cr_expect_eq(plan.base.ready, std::string("test -e /run/ready"));
  cr_expect_eq(plan.base.setup_timeout.count(), 90'000);
  cr_expect_eq(plan.base.ready_timeout.count(), 45'000, "a bare number is seconds");

  cr_expect_eq(plan.code.dir, std::string("/plans/dir/src"), "got '%s'", plan.code.dir.c_str());
  cr_expect_eq(plan.code.mount, std::string("/opt/code"));

  cr_expect(plan.test.command.find("{seed}") != std::string::npos, "the command stays a template");
  cr_expect_eq(plan.test.clones, 3u);
  cr_expect_eq(plan.test.iterations, 2u);
  cr_expect_eq(plan.test.parallel, 2u);
  cr_expect_eq(plan.test.time_limit.count(), 500);
  cr_expect_eq(plan.test.seed, 42u);
  const std::map<std::string, std::vector<std::string>> sweep = {{"mode", {"vm", "cpu"}}, {"n", {"1", "two", "3"}}};
  cr_expect(plan.test.sweep == sweep, "sweep read wrong (integers become text, order kept)");

  cr_expect(plan.failure.ok_exit_codes == (std::vector<int>{0, 3, 7}));
  cr_expect(plan.failure.console_patterns == (std::vector<std::string>{"BUG:", "Oops", "42"}));
  cr_expect(!plan.failure.panic);
}

Test(plan, defaults) {
  StressPlan plan = plan_of("[test]\ncommand = \"true\"\n");
  cr_expect_eq(plan.name, std::string("soak"), "the name defaults to the file's stem");
  cr_expect(plan.guest.kernel.empty() && plan.guest.initrd.empty(), "no kernel or initrd: the built image's");
  cr_expect_eq(plan.guest.memory_bytes, uint64_t{256} << 20);
  cr_expect_eq(plan.guest.cpus, 1u);
  cr_expect(plan.guest.append.empty());
  cr_expect(plan.base.setup.empty() && plan.base.ready.empty());
  cr_expect_eq(plan.base.setup_timeout.count(), 10 * 60'000);
  cr_expect_eq(plan.base.ready_timeout.count(), 2 * 60'000);
  cr_expect(plan.code.dir.empty(), "no code dir stays empty, not base_dir: '%s'", plan.code.dir.c_str());
  cr_expect_eq(plan.code.mount, std::string("/code"));
  cr_expect_eq(plan.test.command, std::string("true"));
  cr_expect(plan.test.sweep.empty());
  cr_expect_eq(plan.test.clones, 1u);
  cr_expect_eq(plan.test.iterations, 1u);
  cr_expect_eq(plan.test.parallel, 0u);
  cr_expect_eq(plan.test.time_limit.count(), 5 * 60'000);
  cr_expect_eq(plan.test.seed, 1u);
  cr_expect(plan.failure.ok_exit_codes == std::vector<int>{0});
  cr_expect(plan.failure.console_patterns.empty());
  cr_expect(plan.failure.panic);
}

Test(plan, paths_resolve_against_base_dir) {
  struct Row {
    const char* dir;
    const char* want;
  };
  const Row rows[] = {
      {"code", "/plans/dir/code"},
      {"./code/", "/plans/dir/code/"},
      {"../elsewhere", "/plans/elsewhere"},
      {"/abs/code", "/abs/code"},
      {"/abs/./a/../b", "/abs/b"},
  };
  for (const Row& row : rows) {
    StressPlan plan = plan_of(std::string("[code]\ndir = \"") + row.dir + "\"\n" + test_plan(""));
    cr_expect_eq(plan.code.dir, std::string(row.want), "%s: '%s', want '%s'", row.dir, plan.code.dir.c_str(),
                 row.want);
  }
  StressPlan plan = plan_of("[guest]\nkernel = \"../k\"\ninitrd = \"i\"\n" + test_plan(""));
  cr_expect_eq(plan.guest.kernel, std::string("/plans/k"));
  cr_expect_eq(plan.guest.initrd, std::string("/plans/dir/i"));
}

Test(plan, memory_forms) {
  struct Row {
    const char* value;
    uint64_t bytes;
  };
  const Row rows[] = {
      {"\"16M\"", uint64_t{16} << 20},
      {"\"256MiB\"", uint64_t{256} << 20},
      {"\"2G\"", uint64_t{2} << 30},
      {"33554432", uint64_t{32} << 20},
      {"\"33554432\"", uint64_t{32} << 20},
  };
  for (const Row& row : rows) {
    StressPlan plan = plan_of(std::string("[guest]\nmemory = ") + row.value + "\n" + test_plan(""));
    cr_expect_eq(plan.guest.memory_bytes, row.bytes, "memory = %s", row.value);
  }
}

Test(plan, unknown_keys_name_file_line_and_suggest) {
  expect_error(test_plan("parallel = 1\nclone = 3\n"),
               "plans/soak.toml:4: test.clone: unknown key (did you mean 'clones'?)");
  expect_error("tests = 1\n", "plans/soak.toml:1: tests: unknown key (did you mean 'test'?)");
  expect_error("[guest]\ncpu = 2\n" + test_plan(""), "plans/soak.toml:2: guest.cpu: unknown key (did you mean 'cpus'?)");
  expect_error("[base]\n\nsetup_timout = \"1s\"\n" + test_plan(""),
               "plans/soak.toml:3: base.setup_timout: unknown key (did you mean 'setup_timeout'?)");
  expect_error("[code]\ndirectory = \"x\"\n" + test_plan(""), "plans/soak.toml:2: code.directory: unknown key");
  expect_error(test_plan("[failure]\npanics = false\n"),
               "plans/soak.toml:4: failure.panics: unknown key (did you mean 'panic'?)");
  // The suggestion is the nearest key, not merely one that is near.
  expect_error(test_plan("swep = 1\n"), "test.swep: unknown key (did you mean 'sweep'?)");
  expect_error("nane = \"x\"\n" + test_plan(""), "nane: unknown key (did you mean 'name'?)");
  // Nothing close: no suggestion.
  std::string far = error_of(test_plan("colour = \"red\"\n"));
  cr_expect(far.find("test.colour: unknown key") != std::string::npos, "%s", far.c_str());
  cr_expect(far.find("did you mean") == std::string::npos, "%s", far.c_str());
}

Test(plan, type_errors) {
  expect_error("name = 3\n" + test_plan(""), "plans/soak.toml:1: name: must be a string");
  expect_error("guest = 3\n" + test_plan(""), "plans/soak.toml:1: guest: must be a table");
  expect_error("[guest]\ncpus = \"4\"\n" + test_plan(""), "plans/soak.toml:2: guest.cpus: must be an integer");
  expect_error("[guest]\nkernel = 1\n" + test_plan(""), "guest.kernel: must be a string");
  expect_error("[guest]\nappend = [\"a\"]\n" + test_plan(""), "guest.append: must be a string");
  expect_error("[base]\nsetup = true\n" + test_plan(""), "base.setup: must be a string");
  expect_error("[code]\nmount = 1\n" + test_plan(""), "code.mount: must be a string");
  expect_error("[test]\ncommand = 5\n", "plans/soak.toml:2: test.command: must be a string");
  expect_error(test_plan("clones = 1.5\n"), "plans/soak.toml:3: test.clones: must be an integer");
  expect_error(test_plan("seed = \"1\"\n"), "test.seed: must be an integer");
  expect_error(test_plan("sweep = [1]\n"), "plans/soak.toml:3: test.sweep: must be a table");
  expect_error(test_plan("[test.sweep]\nx = \"a\"\n"), "plans/soak.toml:4: test.sweep.x: must be an array");
  expect_error(test_plan("[test.sweep]\nx = [1.5]\n"), "test.sweep.x: values must be strings or integers");
  expect_error(test_plan("[test.sweep]\nx = [true]\n"), "test.sweep.x: values must be strings or integers");
  expect_error(test_plan("[failure]\npanic = \"yes\"\n"), "plans/soak.toml:4: failure.panic: must be true or false");
  expect_error(test_plan("[failure]\nok_exit_codes = 0\n"), "failure.ok_exit_codes: must be an array");
  expect_error(test_plan("[failure]\nconsole_patterns = \"BUG\"\n"), "failure.console_patterns: must be an array");
  expect_error(test_plan("failure = 1\n"), "test.failure: unknown key");
  expect_error("failure = 1\n" + test_plan(""), "failure: must be a table");
}

Test(plan, ranges) {
  expect_error("[guest]\ncpus = 0\n" + test_plan(""), "guest.cpus: must be 1 to 64");
  expect_error("[guest]\ncpus = 65\n" + test_plan(""), "guest.cpus: must be 1 to 64");
  cr_expect_eq(plan_of("[guest]\ncpus = 64\n" + test_plan("")).guest.cpus, 64u);
  expect_error(test_plan("clones = 0\n"), "test.clones: must be 1 to 10000");
  expect_error(test_plan("clones = 10001\n"), "test.clones: must be 1 to 10000");
  expect_error(test_plan("iterations = 0\n"), "test.iterations: must be 1 to 10000");
  expect_error(test_plan("parallel = 0\n"), "test.parallel: must be 1 to 1000");
  expect_error(test_plan("parallel = 1001\n"), "test.parallel: must be 1 to 1000");
  expect_error(test_plan("seed = -1\n"), "test.seed: must be 0 to 9223372036854775807");
  cr_expect_eq(plan_of(test_plan("seed = 0\n")).test.seed, 0u);
  cr_expect_eq(plan_of(test_plan("seed = 9223372036854775807\n")).test.seed, uint64_t{INT64_MAX});
  expect_error(test_plan("[failure]\nok_exit_codes = [256]\n"), "failure.ok_exit_codes: values must be exit codes 0 to 255");
  expect_error(test_plan("[failure]\nok_exit_codes = [-1]\n"), "values must be exit codes 0 to 255");
  expect_error(test_plan("[failure]\nok_exit_codes = [\"3x\"]\n"), "values must be exit codes 0 to 255");
  expect_error(test_plan("[failure]\nok_exit_codes = [\"\"]\n"), "values must be exit codes 0 to 255");
  expect_error(test_plan("[failure]\nok_exit_codes = []\n"), "failure.ok_exit_codes: needs at least one code");
  cr_expect(plan_of(test_plan("[failure]\nok_exit_codes = [255]\n")).failure.ok_exit_codes == std::vector<int>{255});
  expect_error(test_plan("[failure]\nconsole_patterns = [\"BUG\", \"\"]\n"), "an empty pattern matches everything");
  cr_expect(plan_of(test_plan("[failure]\nconsole_patterns = []\n")).failure.console_patterns.empty());
}

Test(plan, bad_durations) {
  expect_error(test_plan("time_limit = \"5x\"\n"), "plans/soak.toml:3: test.time_limit: bad duration '5x'");
  expect_error(test_plan("time_limit = \"2.5s\"\n"), "test.time_limit: bad duration '2.5s'");
  expect_error(test_plan("time_limit = \"\"\n"), "test.time_limit: bad duration ''");
  expect_error(test_plan("time_limit = -5\n"), "test.time_limit: bad duration '-5'");
  expect_error(test_plan("time_limit = 9223372036854775807\n"), "test.time_limit: bad duration");
  expect_error(test_plan("time_limit = 0\n"), "test.time_limit: must be more than 0");
  expect_error(test_plan("time_limit = \"0ms\"\n"), "test.time_limit: must be more than 0");
  expect_error(test_plan("time_limit = 1.5\n"), "test.time_limit: must be a duration such as \"30s\"");
  expect_error(test_plan("time_limit = true\n"), "test.time_limit: must be a duration");
  expect_error("[base]\nsetup_timeout = \"1d\"\n" + test_plan(""), "plans/soak.toml:2: base.setup_timeout: bad duration '1d'");
  expect_error("[base]\nready_timeout = \"-1s\"\n" + test_plan(""), "base.ready_timeout: bad duration '-1s'");
  struct Row {
    const char* value;
    int64_t ms;
  };
  const Row good[] = {{"\"500ms\"", 500}, {"\"30s\"", 30'000}, {"\"5m\"", 300'000}, {"\"1h\"", 3'600'000}, {"7", 7'000}};
  for (const Row& row : good) {
    StressPlan plan = plan_of(test_plan(std::string("time_limit = ") + row.value + "\n"));
    cr_expect_eq(plan.test.time_limit.count(), row.ms, "time_limit = %s", row.value);
  }
}

Test(plan, bad_sizes) {
  expect_error("[guest]\nmemory = \"256Q\"\n" + test_plan(""), "plans/soak.toml:2: guest.memory: unknown size unit in '256Q'");
  expect_error("[guest]\nmemory = \"lots\"\n" + test_plan(""), "guest.memory: 'lots' is not a size");
  expect_error("[guest]\nmemory = \"8M\"\n" + test_plan(""), "guest.memory: must be a whole number of MiB, at least 16M");
  expect_error("[guest]\nmemory = \"1000000000\"\n" + test_plan(""), "guest.memory: must be a whole number of MiB");
  expect_error("[guest]\nmemory = 0\n" + test_plan(""), "guest.memory: must be a size such as \"256M\"");
  expect_error("[guest]\nmemory = -1\n" + test_plan(""), "guest.memory: must be a size such as \"256M\"");
  expect_error("[guest]\nmemory = 1.5\n" + test_plan(""), "guest.memory: must be a size such as \"256M\"");
  expect_error("[guest]\nmemory = \"99999999999T\"\n" + test_plan(""), "guest.memory: size '99999999999T' is too large");
}

Test(plan, values_refused) {
  expect_error("name = \"\"\n" + test_plan(""), "plans/soak.toml:1: name: must be a non-empty name without '/'");
  expect_error("name = \"a/b\"\n" + test_plan(""), "name: must be a non-empty name without '/'");
  expect_error("name = \"a\\nb\"\n" + test_plan(""), "name: must be a non-empty name without '/'");
  expect_error("[code]\nmount = \"code\"\n" + test_plan(""), "plans/soak.toml:2: code.mount: must be an absolute path");
  expect_error("[code]\nmount = \"\"\n" + test_plan(""), "code.mount: must be an absolute path");
  expect_error("[code]\nmount = \"/my code\"\n" + test_plan(""), "code.mount: must be an absolute path");
  expect_error("[code]\nmount = \"/a'b\"\n" + test_plan(""), "code.mount: must be an absolute path");
  expect_error("[code]\nmount = \"/a$b\"\n" + test_plan(""), "code.mount: must be an absolute path");
  expect_error(test_plan("[test.sweep]\nx = []\n"), "plans/soak.toml:4: test.sweep.x: needs at least one value");
  for (const char* builtin : {"seed", "run", "iteration", "clone", "code"}) {
    expect_error(test_plan(std::string("[test.sweep]\n") + builtin + " = [1]\n"),
                 std::string("test.sweep.") + builtin + ": is a built-in value");
  }
}

Test(plan, test_and_command_required) {
  std::string missing = error_of("name = \"x\"\n");
  cr_expect(missing.find("plans/soak.toml:") == 0, "%s", missing.c_str());
  cr_expect(missing.find("test: is required") != std::string::npos, "%s", missing.c_str());
  expect_error("test = 1\n", "plans/soak.toml:1: test: must be a table");
  expect_error("[test]\nclones = 2\n", "test.command: is required");
  expect_error("[test]\ncommand = \"\"\n", "plans/soak.toml:2: test.command: is required");
  std::string empty = error_of("");
  cr_expect(empty.find("test: is required") != std::string::npos, "%s", empty.c_str());
}

Test(plan, command_template_checked_at_load) {
  expect_error("[test]\n\ncommand = \"run {stresor}\"\n[test.sweep]\nstressor = [\"vm\"]\n",
               "plans/soak.toml:3: test.command: unknown placeholder {stresor} (known: ");
  std::string known = error_of("[test]\ncommand = \"run {nope}\"\n[test.sweep]\nstressor = [\"vm\"]\n");
  for (const char* name : {"stressor", "seed", "run", "iteration", "clone", "code"}) {
    cr_expect(known.find(name) != std::string::npos, "'%s' not listed as known: %s", name, known.c_str());
  }
  expect_error("[test]\ncommand = \"run {seed\"\n", "test.command: an unclosed '{' at offset 4");
  expect_error("[test]\ncommand = \"run }\"\n", "test.command: a lone '}' at offset 4");
  // Every builtin is known without a sweep.
  plan_of("[test]\ncommand = \"{seed}{run}{iteration}{clone}{code}{{}}\"\n");
}

Test(plan, toml_syntax_errors_name_the_line) {
  std::string got = error_of("name = \"x\"\n[test]\ncommand = \"true\"\nclones = = 2\n");
  cr_expect(got.find("plans/soak.toml:4: ") == 0, "%s", got.c_str());
  got = error_of("[test]\ncommand = \"unterminated\n");
  cr_expect(got.find("plans/soak.toml:2: ") == 0, "%s", got.c_str());
  got = error_of("[test]\ncommand = \"a\"\ncommand = \"b\"\n");
  cr_expect(got.find("plans/soak.toml:3: ") == 0, "a redefined key: %s", got.c_str());
}

Test(plan, run_count_limit) {
  StressPlan most = plan_of(test_plan("clones = 10000\niterations = 10\n"));
  auto runs = expand_runs(most);
  cr_assert(runs.has_value(), "%s", runs ? "" : runs.error().message().c_str());
  cr_expect_eq(runs->size(), 100000u);
  cr_expect_eq(runs->back().id, std::string("r100000"));

  expect_error(test_plan("clones = 10000\niterations = 11\n"), "the plan makes more than 100000 runs");
  expect_error(sweep_of(2, 400), "the plan makes more than 100000 runs");  // 160000 combinations
  expect_error(sweep_of(6, 10), "the plan makes more than 100000 runs");   // 10^6, past the limit early
  cr_expect_eq(expand_runs(plan_of(sweep_of(5, 10)))->size(), 100000u);

  // A plan made in code is held to the same limit.
  StressPlan built = most;
  built.test.iterations = 11;
  auto refused = expand_runs(built);
  cr_assert(!refused.has_value());
  cr_expect_eq(refused.error().code(), ErrorCode::kInvalidArgument);
  cr_expect(refused.error().message().find("more than 100000 runs") != std::string::npos, "%s",
            refused.error().message().c_str());
}

Test(plan, expand_order_iterations_then_combinations_then_clones) {
  StressPlan plan = plan_of(R"([test]
command = "{run} i{iteration} c{clone} {b}-{a} {seed}"
clones = 2
iterations = 2
seed = 7
[test.sweep]
b = ["x", "y", "z"]
a = [1, 2]
)");
  auto runs = expand_runs(plan);
  cr_assert(runs.has_value(), "%s", runs ? "" : runs.error().message().c_str());
  cr_assert_eq(runs->size(), 2u * 6u * 2u);
  size_t n = 0;
  for (unsigned iteration = 0; iteration < 2; ++iteration) {
    // Keys in order (a before b), the last varying fastest.
    for (const char* a : {"1", "2"}) {
      for (const char* b : {"x", "y", "z"}) {
        for (unsigned clone = 0; clone < 2; ++clone, ++n) {
          const RunSpec& run = (*runs)[n];
          char id[16];
          std::snprintf(id, sizeof(id), "r%04zu", n + 1);
          cr_expect_eq(run.index, n);
          cr_expect_eq(run.id, std::string(id), "run %zu: '%s'", n, run.id.c_str());
          cr_expect_eq(run.iteration, iteration, "run %zu", n);
          cr_expect_eq(run.clone, clone, "run %zu", n);
          cr_expect(run.params == (std::map<std::string, std::string>{{"a", a}, {"b", b}}), "run %zu: a=%s b=%s", n,
                    run.params.at("a").c_str(), run.params.at("b").c_str());
          cr_expect_eq(run.seed, run_seed(7, static_cast<unsigned>(n)), "run %zu", n);
          std::string command = std::string(id) + " i" + std::to_string(iteration) + " c" + std::to_string(clone) +
                                " " + b + "-" + a + " " + std::to_string(run.seed);
          cr_expect_eq(run.command, command, "run %zu: '%s', want '%s'", n, run.command.c_str(), command.c_str());
        }
      }
    }
  }
}

Test(plan, expand_full_plan_commands) {
  auto runs = expand_runs(plan_of(kFullPlan));
  cr_assert(runs.has_value());
  cr_assert_eq(runs->size(), 2u * (2u * 3u) * 3u);
  const RunSpec& last = runs->back();
  cr_expect_eq(last.id, std::string("r0036"));
  // mode before n; each key's values in the order written, so the last run is cpu, 3.
  std::string want = "run --seed " + std::to_string(run_seed(42, 35)) +
                     " --mode cpu --n 3 --run r0036 --it 1 --clone 2 --in /opt/code {literal}";
  cr_expect_eq(last.command, want, "'%s'", last.command.c_str());
  cr_expect_eq((*runs)[0].params.at("mode"), std::string("vm"), "values keep the order they were written in");
  cr_expect_eq((*runs)[3].params.at("n"), std::string("two"));
}

Test(plan, ids_widen_past_9999) {
  auto runs = expand_runs(plan_of(test_plan("clones = 5000\niterations = 3\n")));
  cr_assert(runs.has_value());
  cr_expect_eq((*runs)[8].id, std::string("r0009"));
  cr_expect_eq((*runs)[9998].id, std::string("r9999"));
  cr_expect_eq((*runs)[9999].id, std::string("r10000"));
  cr_expect_eq((*runs)[9999].iteration, 1u);
  cr_expect_eq((*runs)[9999].clone, 4999u);
  std::set<std::string> ids;
  for (const auto& run : *runs) ids.insert(run.id);
  cr_expect_eq(ids.size(), runs->size(), "ids repeat");
}

Test(plan, run_seed_is_splitmix64) {
  // Reference outputs of splitmix64 (Vigna) seeded with 0 and with 1234567.
  cr_expect_eq(run_seed(0, 0), 0xE220A8397B1DCDAFull);
  const uint64_t want[] = {6457827717110365317ull, 3203168211198807973ull, 9817491932198370423ull,
                           4593380528125082431ull, 16408922859458223821ull};
  for (unsigned i = 0; i < 5; ++i) {
    cr_expect_eq(run_seed(1234567, i), want[i], "index %u: %llu", i, static_cast<unsigned long long>(run_seed(1234567, i)));
  }
}

Test(plan, run_seed_deterministic_and_distinct) {
  std::set<uint64_t> seen;
  for (uint64_t plan_seed : {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{42}, uint64_t{INT64_MAX}}) {
    for (unsigned index = 0; index < 2000; ++index) {
      uint64_t seed = run_seed(plan_seed, index);
      cr_expect_eq(seed, run_seed(plan_seed, index));
      seen.insert(seed);
    }
  }
  cr_expect_eq(seen.size(), 5u * 2000u, "seeds collide across runs or plans");
  cr_expect_neq(run_seed(1, 0), run_seed(2, 0));
  cr_expect_neq(run_seed(1, 0), run_seed(1, 1));
  // A rerun of the same plan draws the same seeds.
  auto first = expand_runs(plan_of(test_plan("clones = 4\nseed = 9\n")));
  auto second = expand_runs(plan_of(test_plan("clones = 4\nseed = 9\n")));
  auto other = expand_runs(plan_of(test_plan("clones = 4\nseed = 10\n")));
  cr_assert(first && second && other);
  for (size_t i = 0; i < 4; ++i) {
    cr_expect_eq((*first)[i].seed, (*second)[i].seed);
    cr_expect_neq((*first)[i].seed, (*other)[i].seed);
  }
}

Test(plan, fill_template_substitutes) {
  const std::map<std::string, std::string> values = {{"a", "1"}, {"name", "vm"}, {"empty", ""}, {"", "blank"}};
  struct Row {
    const char* text;
    const char* want;
  };
  const Row rows[] = {
      {"", ""},
      {"plain text", "plain text"},
      {"{a}", "1"},
      {"x{a}y{name}z", "x1yvmz"},
      {"{a}{a}", "11"},
      {"[{empty}]", "[]"},
      {"{}", "blank"},
      {"{{", "{"},
      {"}}", "}"},
      {"{{a}}", "{a}"},
      {"{{{a}}}", "{1}"},
      {"awk '{{print $1}}'", "awk '{print $1}'"},
      {"${{HOME}}", "${HOME}"},
  };
  for (const Row& row : rows) {
    auto got = fill_template(row.text, values);
    cr_expect(got.has_value(), "'%s': %s", row.text, got ? "" : got.error().message().c_str());
    if (got) cr_expect_eq(*got, std::string(row.want), "'%s' -> '%s', want '%s'", row.text, got->c_str(), row.want);
  }
  // A value is not itself a template.
  auto got = fill_template("{v}", {{"v", "{a} }"}});
  cr_assert(got.has_value());
  cr_expect_eq(*got, std::string("{a} }"));
}

Test(plan, fill_template_errors) {
  const std::map<std::string, std::string> values = {{"a", "1"}, {"b", "2"}};
  struct Row {
    const char* text;
    const char* want;
  };
  const Row rows[] = {
      {"{c}", "unknown placeholder {c} (known: a, b)"},
      {"{A}", "unknown placeholder {A}"},
      {"{ a}", "unknown placeholder { a}"},
      {"{a{b}", "unknown placeholder {a{b}"},
      {"x {", "an unclosed '{' at offset 2"},
      {"{a", "an unclosed '{' at offset 0"},
      {"}", "a lone '}' at offset 0"},
      {"{a}}", "a lone '}' at offset 3"},
      {"a}b", "a lone '}' at offset 1"},
      {"{{{", "an unclosed '{' at offset 2"},
  };
  for (const Row& row : rows) {
    auto got = fill_template(row.text, values);
    cr_expect(!got.has_value(), "'%s' filled as '%s'", row.text, got ? got->c_str() : "");
    if (!got) {
      cr_expect_eq(got.error().code(), ErrorCode::kInvalidArgument);
      cr_expect(got.error().message().find(row.want) != std::string::npos, "'%s': '%s', want '%s'", row.text,
                got.error().message().c_str(), row.want);
    }
  }
  auto none = fill_template("{x}", {});
  cr_assert(!none.has_value());
  cr_expect(none.error().message().find("unknown placeholder {x} (known: )") != std::string::npos, "%s",
            none.error().message().c_str());
}

Test(plan, find_run_gives_the_same_run) {
  StressPlan plan = plan_of(kFullPlan);
  auto runs = expand_runs(plan);
  cr_assert(runs.has_value());
  for (size_t i : {size_t{0}, size_t{1}, size_t{17}, runs->size() - 1}) {
    const RunSpec& want = (*runs)[i];
    auto got = find_run(plan, want.id);
    cr_assert(got.has_value(), "%s: %s", want.id.c_str(), got ? "" : got.error().message().c_str());
    cr_expect_eq(got->index, want.index);
    cr_expect_eq(got->id, want.id);
    cr_expect_eq(got->iteration, want.iteration);
    cr_expect_eq(got->clone, want.clone);
    cr_expect(got->params == want.params);
    cr_expect_eq(got->seed, want.seed);
    cr_expect_eq(got->command, want.command);
  }
  for (const char* id : {"r0000", "r0037", "r37", "r1", "0001", "", "R0001", "r0001 "}) {
    auto got = find_run(plan, id);
    cr_expect(!got.has_value(), "'%s' found", id);
    if (!got) {
      cr_expect_eq(got.error().code(), ErrorCode::kNotFound, "'%s'", id);
      cr_expect(got.error().message().find(std::string("no run ") + id) != std::string::npos, "%s",
                got.error().message().c_str());
    }
  }
  StressPlan too_big = plan;
  too_big.test.clones = 100000;
  auto refused = find_run(too_big, "r0001");
  cr_assert(!refused.has_value());
  cr_expect_eq(refused.error().code(), ErrorCode::kInvalidArgument, "a plan too large is not 'not found'");
}

Test(plan, load_plan_reads_a_file) {
  char dir[] = "/tmp/plan_test.XXXXXX";
  cr_assert(mkdtemp(dir) != nullptr);
  std::string path = std::string(dir) + "/nightly.toml";
  FILE* file = std::fopen(path.c_str(), "w");
  cr_assert(file != nullptr);
  std::fputs("[code]\ndir = \"src\"\n[test]\ncommand = \"true\"\n", file);
  std::fclose(file);
  auto plan = load_plan(path);
  cr_expect(plan.has_value(), "%s", plan ? "" : plan.error().message().c_str());
  if (plan) {
    cr_expect_eq(plan->path, path);
    cr_expect_eq(plan->name, std::string("nightly"));
    cr_expect_eq(plan->code.dir, std::string(dir) + "/src");
  }
  auto missing = load_plan(std::string(dir) + "/absent.toml");
  cr_expect(!missing.has_value());
  std::remove(path.c_str());
  rmdir(dir);
}
