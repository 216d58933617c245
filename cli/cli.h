// The vmpod command line: a table of verbs (main.cc), each registered by one
// add_* function over CLI11. Verbs only parse flags and call the libraries.
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>

namespace vmpod::cli {

// Documented in docs/cli.md. Commands run in a guest (`run --command`,
// `exec`) exit with that command's code instead; vmpod's own failures then
// use kVmpodFailed, as container runtimes do.
enum class ExitCode : int {
  kOk = 0,
  kFailure = 1,        // an operation failed; the message says why
  kUsage = 2,          // bad flags or arguments
  kGuestFailed = 3,    // the guest failed (QEMU died, a pod was lost)
  kVmpodFailed = 125,  // vmpod failed around a guest command
  kInterrupted = 130,  // stopped by SIGINT or SIGTERM, cleanly
};

// Each verb sets the process's exit code through this.
struct Outcome {
  ExitCode code = ExitCode::kOk;
  int guest_exit = -1;  // the guest command's exit code, when there was one
};

void add_daemon_verbs(CLI::App& app, Outcome& outcome);
void add_run_verb(CLI::App& app, Outcome& outcome);
void add_vm_verbs(CLI::App& app, Outcome& outcome);
void add_monitor_verbs(CLI::App& app, Outcome& outcome);
void add_snapshot_verbs(CLI::App& app, Outcome& outcome);
void add_stress_verbs(CLI::App& app, Outcome& outcome);
void add_libvirt_verbs(CLI::App& app, Outcome& outcome);

// Shared by the verbs.
void setup_logging(const std::string& name, bool verbose);
// Prints "vmpod: <message>" to stderr and maps the error to an exit code.
ExitCode report(const Error& error);
Result<net::SocketAddress> vmm_address(const std::string& flag);
// Blocks until SIGINT or SIGTERM (which the caller has blocked).
int wait_for_stop_signal();
// Blocks SIGINT and SIGTERM in every thread started from now on.
void block_stop_signals();
std::string default_image_dir();

// Starts a server object, then holds it until a stop signal.
template <class Start>
ExitCode serve(const std::string& name, bool verbose, Start start) {
  block_stop_signals();
  setup_logging(name, verbose);
  auto server = start();
  if (!server) return report(server.error());
  int signal = wait_for_stop_signal();
  spdlog::info("{}: stopping on signal {}", name, signal);
  server->reset();
  return ExitCode::kOk;
}

// SIGINT and SIGTERM (blocked with block_stop_signals) as a file
// descriptor to poll.
class SignalFd {
 public:
  SignalFd();
  ~SignalFd();
  SignalFd(const SignalFd&) = delete;
  SignalFd& operator=(const SignalFd&) = delete;
  int fd() const { return fd_; }
  bool fired();  // consumes one

 private:
  int fd_;
};

}  // namespace vmpod::cli

#include <nlohmann/json.hpp>

#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

namespace vmpod::cli {

// A local cluster of `memory_pods` memory pods of `pod_capacity` each
// ("4G"), a compute pod and a vmm, run from this vmpod binary.
Result<vmm::LocalClusterConfig> local_cluster_config(const std::string& dir, unsigned memory_pods,
                                                     const std::string& pod_capacity, bool verbose);
// Once a per-command local cluster has stopped: removes its directory, or
// keeps it and says where when something failed, for its pods' logs.
void finish_local_cluster_dir(const std::string& dir, bool keep);
// The vmm at `flag` (see vmm_address).
Result<std::unique_ptr<vmm::VmmClient>> connect_vmm(const std::string& flag);
// A VM as `ls --json` and `fork --json` print it.
nlohmann::json vm_json(const vmm::VmRecord& vm);

// Per-pod statistics of one guest, as `vmpod run` prints them on exit.
void print_stats(const std::string& vm, const std::string& compute_pod, const cpuserver::GuestStats& stats);

}  // namespace vmpod::cli
