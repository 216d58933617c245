#include "bench_common.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace vmpod::bench {

namespace {

std::atomic<int> g_stop_signal{0};

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void install_stop_signals() {
  sigset_t set = stop_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    while (true) {
      int signal = 0;
      if (sigwait(&set, &signal) != 0) continue;
      int previous = g_stop_signal.exchange(signal);
      const char* message = previous == 0 ? "\nbench: stopping, cleaning up (pods, mounts, guests)...\n"
                                          : "\nbench: still cleaning up, please wait\n";
      ssize_t ignored = ::write(STDERR_FILENO, message, std::char_traits<char>::length(message));
      (void)ignored;
    }
  }).detach();
}

bool stop_requested() { return g_stop_signal.load() != 0; }
int stop_signal() { return g_stop_signal.load(); }

bool sleep_unless_stopped(std::chrono::milliseconds duration) {
  auto deadline = std::chrono::steady_clock::now() + duration;
  while (!stop_requested()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return true;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        deadline - now, std::chrono::milliseconds(5)));
  }
  return false;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Summary summarize(const std::vector<double>& values) {
  Summary s;
  if (values.empty()) return s;
  s.min = *std::min_element(values.begin(), values.end());
  s.max = *std::max_element(values.begin(), values.end());
  std::vector<double> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  size_t n = sorted.size();
  s.median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  return s;
}

std::string format_value(double value) {
  double magnitude = std::fabs(value);
  if (magnitude == 0) return "0";
  if (magnitude >= 100) return fmt::format("{:.1f}", value);
  if (magnitude >= 10) return fmt::format("{:.2f}", value);
  if (magnitude >= 0.1) return fmt::format("{:.3f}", value);
  return fmt::format("{:.4g}", value);
}

std::vector<double> Figure::ratios() const {
  std::vector<double> out;
  for (size_t i = 0; i < std::min(subject.size(), baseline.size()); ++i) {
    out.push_back(baseline[i] != 0 ? subject[i] / baseline[i] : 0);
  }
  return out;
}

std::string Figure::line() const {
  Summary a = summarize(subject), b = summarize(baseline), r = summarize(ratios());
  return fmt::format("{} {}={} {}={} ratio={} {}_min={} {}_max={} {}_min={} {}_max={} ratio_min={} ratio_max={} pairs={}",
                     name, subject_key, format_value(a.median), baseline_key, format_value(b.median),
                     format_value(r.median), subject_key, format_value(a.min), subject_key,
                     format_value(a.max), baseline_key, format_value(b.min), baseline_key,
                     format_value(b.max), format_value(r.min), format_value(r.max), subject.size());
}

nlohmann::json Figure::to_json() const {
  auto summary_json = [](const std::vector<double>& values) {
    Summary s = summarize(values);
    return nlohmann::json{{"min", s.min}, {"median", s.median}, {"max", s.max}, {"runs", values}};
  };
  return nlohmann::json{{"name", name},
                        {"subject", subject_key},
                        {"baseline", baseline_key},
                        {subject_key, summary_json(subject)},
                        {baseline_key, summary_json(baseline)},
                        {"ratio", summary_json(ratios())}};
}

std::string Goal::line() const {
  return fmt::format("goal: {} {} {} {} measured={} {}{}", figure, what, at_most ? "<=" : ">=",
                     format_value(target), format_value(value), met() ? "MET" : "MISSED",
                     note.empty() ? "" : " (" + note + ")");
}

nlohmann::json Goal::to_json() const {
  return nlohmann::json{{"figure", figure}, {"what", what},       {"op", at_most ? "<=" : ">="},
                        {"target", target}, {"measured", value}, {"met", met()},
                        {"note", note}};
}

bool write_json(const nlohmann::json& doc, const std::string& where) {
  std::string text = doc.dump(2) + "\n";
  if (where == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  }
  std::ofstream out(where);
  out << text;
  return static_cast<bool>(out);
}

std::string executable_dir() {
  char path[4096];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return ".";
  std::string exe(path, static_cast<size_t>(n));
  return exe.substr(0, exe.rfind('/'));
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

std::string guest_image_file(const std::string& file) {
  std::string dir = env_or("VMPOD_IMAGE_DIR", executable_dir() + "/../../images");
  std::error_code ec;
  if (std::filesystem::exists(dir + "/" + file)) {
    return std::filesystem::weakly_canonical(dir + "/" + file, ec).string();
  }
  return dir + "/" + file;
}

std::string vmpod_binary() { return env_or("VMPOD_BINARY", executable_dir() + "/../../cli/vmpod"); }

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string first;
  in >> first;
  return first.empty() ? "?" : first;
}

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    // Undo mountinfo's octal escapes (\040 for a space, ...).
    std::string decoded;
    for (size_t i = 0; i < mount_point.size(); ++i) {
      if (mount_point[i] == '\\' && i + 3 < mount_point.size()) {
        decoded.push_back(static_cast<char>(std::stoi(mount_point.substr(i + 1, 3), nullptr, 8)));
        i += 3;
      } else {
        decoded.push_back(mount_point[i]);
      }
    }
    if (decoded == dir || decoded.rfind(dir + "/", 0) == 0) out.push_back(decoded);
  }
  return out;
}

int finish(const std::string& name, const std::string& dir, bool own_dir, const std::string& failure,
           nlohmann::json& doc, const std::optional<std::string>& json_path,
           std::chrono::steady_clock::time_point started) {
  std::vector<std::string> left = mounts_under(dir);
  for (const auto& m : left) std::fprintf(stderr, "%s: mount left behind: %s\n", name.c_str(), m.c_str());
  if (left.empty() && own_dir) {
    std::error_code ec;
    if (failure.empty()) std::filesystem::remove_all(dir, ec);
    else std::fprintf(stderr, "%s: logs kept in %s\n", name.c_str(), dir.c_str());
  }
  int exit_code = 0;
  if (!failure.empty()) {
    std::fprintf(stderr, "%s: FAILED: %s\n", name.c_str(), failure.c_str());
    exit_code = 1;
  } else if (stop_requested()) {
    std::fprintf(stderr, "%s: interrupted, cleaned up\n", name.c_str());
    exit_code = 128 + stop_signal();
  } else {
    if (json_path) {
      doc["runtime_s"] = seconds_since(started);
      if (!write_json(doc, *json_path)) {
        std::fprintf(stderr, "%s: cannot write %s\n", name.c_str(), json_path->c_str());
        exit_code = 1;
      }
    }
    std::fprintf(stderr, "%s: done in %.1f s\n", name.c_str(), seconds_since(started));
  }
  if (!left.empty() && exit_code == 0) exit_code = 1;
  return exit_code;
}

}  // namespace vmpod::bench
