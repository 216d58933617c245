#include <vmpod/stress/plan.h>

#include <charconv>
#include <filesystem>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <toml++/toml.h>

#include <vmpod/base/file.h>
#include <vmpod/base/duration.h>
#include <vmpod/base/units.h>

namespace vmpod::stress {

namespace {

// Propagates an error whose message already names file:line and key.
#define PLAN_TRY(expr)                                          \
  do {                                                          \
    auto plan_try_result_ = (expr);                             \
    if (!plan_try_result_) return ::vmpod::fail(plan_try_result_.error()); \
  } while (0)

// More runs than a person means: a plan that asks for them is a mistake,
// and a fuzzer must not make the expansion allocate without end.
constexpr uint64_t kMaxRuns = 100000;

// The names a command template may use besides the sweep's.
const std::set<std::string> kBuiltinValues = {"seed", "run", "iteration", "clone", "code"};

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Reads one table of the plan, with errors that name file:line and key.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string prefix, const std::string& source)
      : table_(table), prefix_(std::move(prefix)), source_(source) {}

  Error error(const toml::node* node, const std::string& key, const std::string& why) const {
    auto line = node ? node->source().begin.line : table_.source().begin.line;
    return Error(ErrorCode::kInvalidArgument, fmt::format("{}:{}: {}{}: {}", source_, line, prefix_, key, why));
  }

  // Every key must be known: a typo must not be ignored.
  Status check_keys(const std::vector<std::string>& known) const {
    for (const auto& [key, node] : table_) {
      std::string name(key.str());
      if (std::find(known.begin(), known.end(), name) != known.end()) continue;
      // The nearest key within two edits, the first of equals.
      std::string hint;
      size_t nearest = 3;
      for (const auto& candidate : known) {
        size_t distance = edit_distance(name, candidate);
        if (distance < nearest) {
          nearest = distance;
          hint = " (did you mean '" + candidate + "'?)";
        }
      }
      return fail(error(&node, name, "unknown key" + hint));
    }
    return {};
  }

  Status text(const std::string& key, std::string& out) const {
    const toml::node* node = table_.get(key);
    if (!node) return {};
    auto value = node->value<std::string>();
    if (!node->is_string() || !value) return fail(error(node, key, "must be a string"));
    out = *value;
    return {};
  }

  Status integer(const std::string& key, int64_t min, int64_t max, int64_t& out) const {
    const toml::node* node = table_.get(key);
    if (!node) return {};
    if (!node->is_integer()) return fail(error(node, key, "must be an integer"));
    int64_t value = *node->value<int64_t>();
    if (value < min || value > max) {
      return fail(error(node, key, fmt::format("must be {} to {}", min, max)));
    }
    out = value;
    return {};
  }

  template <class Unsigned>
  Status count(const std::string& key, int64_t min, int64_t max, Unsigned& out) const {
    int64_t value = static_cast<int64_t>(out);
    PLAN_TRY(integer(key, min, max, value));
    out = static_cast<Unsigned>(value);
    return {};
  }

  Status boolean(const std::string& key, bool& out) const {
    const toml::node* node = table_.get(key);
    if (!node) return {};
    if (!node->is_boolean()) return fail(error(node, key, "must be true or false"));
    out = *node->value<bool>();
    return {};
  }

  // "30s" or a number of seconds.
  Status duration(const std::string& key, std::chrono::milliseconds& out) const {
    const toml::node* node = table_.get(key);
    if (!node) return {};
    Result<std::chrono::milliseconds> value = fail(ErrorCode::kInvalidArgument, "");
    if (node->is_integer()) value = parse_duration(std::to_string(*node->value<int64_t>()));
    else if (node->is_string()) value = parse_duration(*node->value<std::string>());
    else return fail(error(node, key, "must be a duration such as \"30s\""));
    if (!value) return fail(error(node, key, value.error().message()));
    if (value->count() == 0) return fail(error(node, key, "must be more than 0"));
    out = *value;
    return {};
  }

  // Strings, or integers written as text.
  Status words(const std::string& key, const toml::node& node, std::vector<std::string>& out) const {
    const toml::array* array = node.as_array();
    if (!array) return fail(error(&node, key, "must be an array"));
    out.clear();
    for (const toml::node& item : *array) {
      if (item.is_string()) out.push_back(*item.value<std::string>());
      else if (item.is_integer()) out.push_back(std::to_string(*item.value<int64_t>()));
      else return fail(error(&item, key, "values must be strings or integers"));
    }
    return {};
  }

  const toml::table* table(const std::string& key, Status& status) const {
    const toml::node* node = table_.get(key);
    if (!node) return nullptr;
    if (!node->is_table()) status = fail(error(node, key, "must be a table"));
    return node->as_table();
  }

  const toml::table& raw() const { return table_; }

 private:
  const toml::table& table_;
  std::string prefix_;
  const std::string& source_;
};

std::string absolute_from(const std::string& base_dir, const std::string& path) {
  if (path.empty()) return path;
  std::filesystem::path p(path);
  if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
  return p.lexically_normal().string();
}

Status read_guest(const TableReader& in, const std::string& base_dir, GuestPlan& guest) {
  PLAN_TRY(in.check_keys({"kernel", "initrd", "memory", "cpus", "append"}));
  PLAN_TRY(in.text("kernel", guest.kernel));
  PLAN_TRY(in.text("initrd", guest.initrd));
  guest.kernel = absolute_from(base_dir, guest.kernel);
  guest.initrd = absolute_from(base_dir, guest.initrd);
  if (const toml::node* memory = in.raw().get("memory")) {
    Result<uint64_t> bytes = fail(ErrorCode::kInvalidArgument, "must be a size such as \"256M\"");
    if (memory->is_string()) bytes = parse_size(*memory->value<std::string>());
    else if (memory->is_integer() && *memory->value<int64_t>() > 0) bytes = static_cast<uint64_t>(*memory->value<int64_t>());
    if (!bytes) return fail(in.error(memory, "memory", bytes.error().message()));
    if (*bytes < (16ull << 20) || *bytes % (1ull << 20) != 0) {
      return fail(in.error(memory, "memory", "must be a whole number of MiB, at least 16M"));
    }
    guest.memory_bytes = *bytes;
  }
  PLAN_TRY(in.count("cpus", 1, 64, guest.cpus));
  PLAN_TRY(in.text("append", guest.append));
  return {};
}

Status read_base(const TableReader& in, BasePlan& base) {
  PLAN_TRY(in.check_keys({"setup", "ready", "setup_timeout", "ready_timeout"}));
  PLAN_TRY(in.text("setup", base.setup));
  PLAN_TRY(in.text("ready", base.ready));
  PLAN_TRY(in.duration("setup_timeout", base.setup_timeout));
  PLAN_TRY(in.duration("ready_timeout", base.ready_timeout));
  return {};
}

Status read_code(const TableReader& in, const std::string& base_dir, CodePlan& code) {
  PLAN_TRY(in.check_keys({"dir", "mount"}));
  PLAN_TRY(in.text("dir", code.dir));
  code.dir = absolute_from(base_dir, code.dir);
  PLAN_TRY(in.text("mount", code.mount));
  if (code.mount.empty() || code.mount[0] != '/' ||
      code.mount.find_first_of(" \t\n'\"\\$`") != std::string::npos) {
    return fail(in.error(in.raw().get("mount"), "mount", "must be an absolute path without spaces or quotes"));
  }
  return {};
}

Status read_test(const TableReader& in, const std::string& source, TestPlan& test) {
  PLAN_TRY(in.check_keys({"command", "sweep", "clones", "iterations", "parallel", "time_limit", "seed"}));
  PLAN_TRY(in.text("command", test.command));
  if (test.command.empty()) return fail(in.error(in.raw().get("command"), "command", "is required"));
  PLAN_TRY(in.count("clones", 1, 10000, test.clones));
  PLAN_TRY(in.count("iterations", 1, 10000, test.iterations));
  PLAN_TRY(in.count("parallel", 1, 1000, test.parallel));
  PLAN_TRY(in.duration("time_limit", test.time_limit));
  int64_t seed = static_cast<int64_t>(test.seed);
  PLAN_TRY(in.integer("seed", 0, std::numeric_limits<int64_t>::max(), seed));
  test.seed = static_cast<uint64_t>(seed);
  Status status;
  if (const toml::table* sweep = in.table("sweep", status)) {
    TableReader sweep_in(*sweep, "test.sweep.", source);
    for (const auto& [key, node] : *sweep) {
      std::string name(key.str());
      if (kBuiltinValues.count(name)) {
        return fail(sweep_in.error(&node, name, "is a built-in value ({seed}, {run}, {iteration}, {clone}, {code})"));
      }
      std::vector<std::string> values;
      PLAN_TRY(sweep_in.words(name, node, values));
      if (values.empty()) return fail(sweep_in.error(&node, name, "needs at least one value"));
      test.sweep[name] = std::move(values);
    }
  }
  return status;
}

Status read_failure(const TableReader& in, FailurePlan& failure) {
  PLAN_TRY(in.check_keys({"ok_exit_codes", "console_patterns", "panic"}));
  if (const toml::node* codes = in.raw().get("ok_exit_codes")) {
    std::vector<std::string> words;
    PLAN_TRY(in.words("ok_exit_codes", *codes, words));
    failure.ok_exit_codes.clear();
    for (const auto& word : words) {
      int code = 0;
      auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), code);
      if (ec != std::errc() || end != word.data() + word.size() || code < 0 || code > 255) {
        return fail(in.error(codes, "ok_exit_codes", "values must be exit codes 0 to 255"));
      }
      failure.ok_exit_codes.push_back(code);
    }
    if (failure.ok_exit_codes.empty()) return fail(in.error(codes, "ok_exit_codes", "needs at least one code"));
  }
  if (const toml::node* patterns = in.raw().get("console_patterns")) {
    PLAN_TRY(in.words("console_patterns", *patterns, failure.console_patterns));
    for (const auto& pattern : failure.console_patterns) {
      if (pattern.empty()) return fail(in.error(patterns, "console_patterns", "an empty pattern matches everything"));
    }
  }
  PLAN_TRY(in.boolean("panic", failure.panic));
  return {};
}

std::map<std::string, std::string> template_values(const StressPlan& plan, const RunSpec& run) {
  std::map<std::string, std::string> values = run.params;
  values["seed"] = std::to_string(run.seed);
  values["run"] = run.id;
  values["iteration"] = std::to_string(run.iteration);
  values["clone"] = std::to_string(run.clone);
  values["code"] = plan.code.mount;
  return values;
}

uint64_t combinations(const StressPlan& plan) {
  uint64_t count = 1;
  for (const auto& [key, values] : plan.test.sweep) {
    count *= values.size();
    if (count > kMaxRuns) return count;
  }
  return count;
}

}  // namespace

Result<std::string> fill_template(std::string_view text, const std::map<std::string, std::string>& values) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '}') {
      if (i + 1 < text.size() && text[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      return fail(ErrorCode::kInvalidArgument, "a lone '}' at offset " + std::to_string(i) + " (write }} for one)");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < text.size() && text[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t close = text.find('}', i);
    if (close == std::string_view::npos) {
      return fail(ErrorCode::kInvalidArgument, "an unclosed '{' at offset " + std::to_string(i) + " (write {{ for one)");
    }
    std::string name(text.substr(i + 1, close - i - 1));
    auto value = values.find(name);
    if (value == values.end()) {
      std::string known;
      for (const auto& [key, unused] : values) known += (known.empty() ? "" : ", ") + key;
      return fail(ErrorCode::kInvalidArgument, "unknown placeholder {" + name + "} (known: " + known + ")");
    }
    out += value->second;
    i = close;
  }
  return out;
}

uint64_t run_seed(uint64_t plan_seed, unsigned index) {
  uint64_t z = plan_seed + (static_cast<uint64_t>(index) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Result<StressPlan> parse_plan(std::string_view text, const std::string& base_dir, const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& error) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{}:{}: {}", source_name, error.source().begin.line,
                                                         error.description()));
  }
  StressPlan plan;
  TableReader top(root, "", source_name);
  PLAN_TRY(top.check_keys({"name", "guest", "base", "code", "test", "failure"}));
  plan.name = std::filesystem::path(source_name).stem().string();
  PLAN_TRY(top.text("name", plan.name));
  if (plan.name.empty() || plan.name.find_first_of("/\n") != std::string::npos) {
    return fail(top.error(root.get("name"), "name", "must be a non-empty name without '/'"));
  }
  Status status;
  if (const toml::table* guest = top.table("guest", status)) {
    PLAN_TRY(read_guest(TableReader(*guest, "guest.", source_name), base_dir, plan.guest));
  }
  PLAN_TRY(status);
  if (const toml::table* base = top.table("base", status)) {
    PLAN_TRY(read_base(TableReader(*base, "base.", source_name), plan.base));
  }
  PLAN_TRY(status);
  if (const toml::table* code = top.table("code", status)) {
    PLAN_TRY(read_code(TableReader(*code, "code.", source_name), base_dir, plan.code));
  }
  PLAN_TRY(status);
  const toml::table* test = top.table("test", status);
  PLAN_TRY(status);
  if (!test) return fail(top.error(nullptr, "test", "is required (with test.command)"));
  TableReader test_in(*test, "test.", source_name);
  PLAN_TRY(read_test(test_in, source_name, plan.test));
  if (const toml::table* failure = top.table("failure", status)) {
    PLAN_TRY(read_failure(TableReader(*failure, "failure.", source_name), plan.failure));
  }
  PLAN_TRY(status);
  // A typo in the command shows now, not in every clone.
  RunSpec probe;
  probe.id = "r0001";
  for (const auto& [key, values] : plan.test.sweep) probe.params[key] = values.front();
  if (auto filled = fill_template(plan.test.command, template_values(plan, probe)); !filled) {
    return fail(test_in.error(test->get("command"), "command", filled.error().message()));
  }
  uint64_t runs = combinations(plan) * plan.test.clones * plan.test.iterations;
  if (combinations(plan) > kMaxRuns || runs > kMaxRuns) {
    return fail(test_in.error(nullptr, "clones", fmt::format("the plan makes more than {} runs", kMaxRuns)));
  }
  return plan;
}

Result<StressPlan> load_plan(const std::string& path) {
  auto text = read_file(path);
  if (!text) return fail(text.error().context("plan"));
  auto absolute = std::filesystem::absolute(path).lexically_normal();
  auto plan = parse_plan(*text, absolute.parent_path().string(), path);
  if (!plan) return fail(plan.error());
  plan->path = absolute.string();
  return plan;
}

Result<std::vector<RunSpec>> expand_runs(const StressPlan& plan) {
  uint64_t combos = combinations(plan);
  if (combos > kMaxRuns || combos * plan.test.clones * plan.test.iterations > kMaxRuns) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("the plan makes more than {} runs", kMaxRuns));
  }
  std::vector<RunSpec> runs;
  for (unsigned iteration = 0; iteration < plan.test.iterations; ++iteration) {
    for (uint64_t combo = 0; combo < combos; ++combo) {
      // The combination's values: the last key varies fastest.
      std::map<std::string, std::string> params;
      uint64_t rest = combo;
      for (auto it = plan.test.sweep.rbegin(); it != plan.test.sweep.rend(); ++it) {
        params[it->first] = it->second[rest % it->second.size()];
        rest /= it->second.size();
      }
      for (unsigned clone = 0; clone < plan.test.clones; ++clone) {
        RunSpec run;
        run.index = static_cast<unsigned>(runs.size());
        run.id = fmt::format("r{:04d}", run.index + 1);
        run.iteration = iteration;
        run.clone = clone;
        run.params = params;
        run.seed = run_seed(plan.test.seed, run.index);
        auto command = fill_template(plan.test.command, template_values(plan, run));
        if (!command) return fail(command.error());
        run.command = *command;
        runs.push_back(std::move(run));
      }
    }
  }
  return runs;
}

Result<RunSpec> find_run(const StressPlan& plan, std::string_view id) {
  auto runs = expand_runs(plan);
  if (!runs) return fail(runs.error());
  for (auto& run : *runs) {
    if (run.id == id) return run;
  }
  return fail(ErrorCode::kNotFound, "the plan has no run " + std::string(id));
}

}  // namespace vmpod::stress
