// Child processes that vmpod starts and must stop: the daemons of
// `vmpod run`, and the pods that integration tests start for real. Each runs
// in its own process group so a terminal's Ctrl-C reaches only vmpod, which
// then stops them cleanly, by process id.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <vmpod/base/result.h>

namespace vmpod {

class Subprocess {
 public:
  // Starts argv[0] (looked up in PATH) with stdout and stderr appended to
  // log_path ("" keeps vmpod's own). With die_with_parent the child is
  // killed when the thread that spawned it ends (PR_SET_PDEATHSIG): for
  // children of a main thread, so a crashed `vmpod run` or test leaves no
  // pods behind; never for children spawned from a short-lived thread.
  static Result<Subprocess> spawn(const std::vector<std::string>& argv, const std::string& log_path,
                                  bool die_with_parent = false);

  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();  // kills and reaps a child still running

  pid_t pid() const { return pid_; }
  bool running();
  std::optional<int> wait_status() const { return status_; }
  // SIGTERM, then SIGKILL after `grace`; reaps it.
  void stop(std::chrono::milliseconds grace);
  void kill(int signal);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// The path of the running executable, for re-executing vmpod's own verbs.
std::string self_executable();

}  // namespace vmpod
