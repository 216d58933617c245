// The flags the CLI11 benchmarks share and what they mean for all of them:
// --quick (1 pair, no warm-up), --pairs, --warmup, --json [PATH|-], --dir
// and --verbose (the pods' logs at info level), bound to the members of a
// benchmark's own options of those names. A benchmark adds its other flags
// on the same app and sets what --quick means for them after apply().
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

namespace vmpod::bench {

struct FlagHelp {
  const char* quick;
  const char* pairs;
  const char* warmup;
  const char* dir;
};

template <class Options>
class CommonFlags {
 public:
  CommonFlags(CLI::App& app, Options& options, const FlagHelp& help) : options_(options) {
    app.add_flag("--quick", options.quick, help.quick);
    app.add_option("--pairs", options.pairs, help.pairs)->capture_default_str()->check(CLI::Range(1u, 1000u));
    app.add_option("--warmup", options.warmup, help.warmup)->capture_default_str();
    json_ = app.add_option("--json", json_path_, "also write the results as JSON (- for stdout)");
    app.add_option("--dir", options.dir, help.dir);
    app.add_flag("--verbose", options.verbose, "the pods' logs at info level");
  }

  // After parsing.
  void apply() {
    if (*json_) options_.json = json_path_;
    if (options_.quick) {
      options_.pairs = 1;
      options_.warmup = 0;
    }
    spdlog::set_level(options_.verbose ? spdlog::level::info : spdlog::level::warn);
  }

 private:
  Options& options_;
  std::string json_path_;
  CLI::Option* json_ = nullptr;
};

}  // namespace vmpod::bench
