// What every vmpod benchmark shares (see shared/BENCHMARKS.md): a stop flag
// set by Ctrl-C, min/median/max summaries of runs alternated with their
// baseline, one parseable result line per figure, goal lines, and --json.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <optional>

#include <nlohmann/json.hpp>

namespace vmpod::bench {

// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread started
// after it (call it first in main), and starts a thread that waits for them
// and sets the stop flag. Children that exec get an empty mask back.
void install_stop_signals();
bool stop_requested();
// The signal that stopped us, for the exit status (128 + signal), or 0.
int stop_signal();

// Sleeps up to `duration`, returning early (false) once a stop is requested.
bool sleep_unless_stopped(std::chrono::milliseconds duration);

double seconds_since(std::chrono::steady_clock::time_point start);


struct Summary {
  double min = 0, median = 0, max = 0;
};
Summary summarize(const std::vector<double>& values);

// One figure: the thing measured (`subject`) and its baseline, one value
// per measured pair, in run order.
struct Figure {
  std::string name;            // e.g. pagein.random.p50_us.tcp
  std::string subject_key;     // vmpod, tmpfs, ...
  std::string baseline_key;    // null, plain, ...
  std::vector<double> subject;
  std::vector<double> baseline;

  std::vector<double> ratios() const;  // subject[i] / baseline[i]
  // `name subject=MED baseline=MED ratio=MED subject_min= subject_max= ...`
  std::string line() const;
  nlohmann::json to_json() const;
};

// A target the issue set: `value` (a figure's median subject or median
// ratio) must be <= or >= `target`.
struct Goal {
  std::string figure;
  std::string what;  // "ratio" or the subject key
  bool at_most = true;
  double target = 0;
  double value = 0;
  std::string note;

  bool met() const { return at_most ? value <= target : value >= target; }
  std::string line() const;
  nlohmann::json to_json() const;
};

// Formats a value with enough digits for small latencies and ratios.
std::string format_value(double value);

// `where` is a path or "-" for stdout.
bool write_json(const nlohmann::json& doc, const std::string& where);

// Ends a run: reports mounts left under dir, removes dir when the run made
// it and all went well, writes --json, and returns the exit code (1 on a
// failure or a mount left behind, 128 + signal when interrupted).
int finish(const std::string& name, const std::string& dir, bool own_dir, const std::string& failure,
           nlohmann::json& doc, const std::optional<std::string>& json_path,
           std::chrono::steady_clock::time_point started);

// The directory holding this executable.
std::string executable_dir();
// The environment variable's value, or `fallback`.
std::string env_or(const char* name, const std::string& fallback);

// A file of the built guest image ($VMPOD_IMAGE_DIR, else the build tree).
std::string guest_image_file(const std::string& file);
// The vmpod executable ($VMPOD_BINARY, else the build tree).
std::string vmpod_binary();

// The first field of /proc/loadavg (the machine is shared: say how busy).
std::string load_average();

// Mount points at or under `dir` still listed in /proc/self/mountinfo.
std::vector<std::string> mounts_under(const std::string& dir);

}  // namespace vmpod::bench
