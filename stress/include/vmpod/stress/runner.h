// Runs a stress plan on a vmm: boots the base machine once (or finds its
// snapshot from an earlier invocation), snapshots it when ready, then forks
// up to K copy-on-write clones at a time, each given its own identity and
// the current code under test, runs one test in each through the guest
// agent, judges it, snapshots it if it failed and destroys it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>
#include <vmpod/stress/plan.h>
#include <vmpod/stress/report.h>
#include <vmpod/vmm/vmm.h>

namespace vmpod::stress {

struct StressProgress {
  size_t total = 0;
  size_t running = 0;
  size_t done = 0;
  size_t failed = 0;  // of done: not passed
  double elapsed_s = 0;
  std::string phase;  // "base", "runs"
};

struct StressOptions {
  // Where each invocation keeps its code image and report
  // (STATE_DIR/SESSION/); the compute pods must be able to read it.
  std::string state_dir;
  std::string default_kernel;  // the guest image, when the plan names none
  std::string default_initrd;
  unsigned parallel = 0;   // clones at a time; 0: the plan's
  bool keep_failed = false;  // a failing clone keeps running after its snapshot
  bool prefetch = true;      // clones fetch the base's working set ahead
  std::function<void(const StressProgress&)> on_progress;  // from the runner's threads
};

// The name of the base snapshot for a plan: the same as long as the guest
// image's files, its shape, the setup and the readiness check are.
Result<std::string> base_snapshot_name(const StressPlan& plan, const StressOptions& options);

// Where the report of session SESSION is kept.
std::string report_path(const std::string& state_dir, const std::string& session);
Result<StressReport> load_report(const std::string& state_dir, const std::string& session);
// "SESSION-r0003" -> {SESSION, "r0003"}.
Result<std::pair<std::string, std::string>> split_run_id(const std::string& run_id);

class StressRunner {
 public:
  StressRunner(net::SocketAddress vmm, StressPlan plan, StressOptions options);

  // The invocation's id ("st-" and 8 hex digits), which names its clones,
  // its failure snapshots and its state directory.
  const std::string& session() const { return session_; }
  // Every run of the plan; the report is also written to report_path().
  // When interrupted, the runs that ended are reported and interrupted is set.
  Result<StressReport> run();
  // From any thread (a signal handler's): starts no new run and stops the
  // live clones (and the base machine while it is being built).
  void interrupt();

  // One run of an earlier report again, from the same base snapshot with
  // the same seed and command and the code image it ran with.
  Result<RunResult> rerun(const StressReport& earlier, const std::string& run);

 private:
  Result<std::string> prepare_base(StressReport& report);
  Result<std::string> build_code_image();
  // Forks a clone, runs the test in it and judges it; the clone is left
  // for release_clone.
  RunResult run_one(vmm::VmmClient& vmm, const RunSpec& spec, const std::string& base,
                    const std::string& code_image);
  // Stops a run's clone, unless it is kept.
  void release_clone(vmm::VmmClient& vmm, const std::string& clone, bool kept);
  // Stops a VM and removes it from the vmm.
  void discard(vmm::VmmClient& vmm, const std::string& vm);
  void track(const std::string& vm, bool live);
  void progress(const std::string& phase, size_t total, size_t running, size_t done, size_t failed);

  net::SocketAddress vmm_address_;
  StressPlan plan_;
  StressOptions options_;
  std::string session_;
  std::string session_dir_;
  std::chrono::steady_clock::time_point started_;
  std::atomic<bool> interrupted_{false};
  std::mutex live_mutex_;
  std::set<std::string> live_vms_;
};

// Forks a failed run's snapshot again, running, for a person to examine
// over its QMP and HMP endpoints and console.
Result<vmm::VmRecord> replay_failure(vmm::VmmClient& vmm, const RunResult& run);

}  // namespace vmpod::stress
