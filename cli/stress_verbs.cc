// `vmpod stress PLAN`: a stress plan's runs in copy-on-write clones of one
// base snapshot, and `vmpod stress replay RUN-ID` to look at a failure
// again. The work is the stress library's; this parses flags, starts a
// local cluster when no vmm is given, shows progress and writes reports.
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include <vmpod/base/file.h>
#include <vmpod/base/units.h>
#include <vmpod/stress/runner.h>
#include <vmpod/vmm/local_cluster.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

struct StressFlags {
  std::string plan;
  std::string vmm;
  std::string state_dir;
  std::string junit;
  std::string json_path;
  bool json = false;
  unsigned parallel = 0;
  bool keep_failed = false;
  bool no_prefetch = false;
  bool list = false;
  unsigned memory_pods = 2;
  std::string pod_capacity = "4G";
  bool verbose = false;
};

struct ReplayFlags {
  std::string run_id;
  std::string vmm;
  std::string state_dir;
  bool rerun = false;
  bool json = false;
};

std::string default_state_dir() {
  if (const char* env = std::getenv("VMPOD_STATE_DIR")) return std::string(env) + "/stress";
  return "/var/lib/vmpod/stress";
}

stress::StressOptions stress_options(const std::string& state_dir) {
  stress::StressOptions options;
  options.state_dir = state_dir.empty() ? default_state_dir() : state_dir;
  options.default_kernel = default_image_dir() + "/vmlinux";
  options.default_initrd = default_image_dir() + "/initramfs.cpio.gz";
  return options;
}

// One line, rewritten in place, when stderr is a terminal.
void show_progress(const stress::StressProgress& progress) {
  if (progress.phase == "base") {
    std::fprintf(stderr, "\rvmpod stress: booting the base machine (%.0f s)\x1b[K", progress.elapsed_s);
    return;
  }
  double minutes = progress.elapsed_s / 60.0;
  std::fprintf(stderr, "\rvmpod stress: %zu/%zu done, %zu running, %zu failed, %.1f runs/min\x1b[K", progress.done,
               progress.total, progress.running, progress.failed, minutes > 0 ? progress.done / minutes : 0.0);
}

// Runs `plan` on the vmm at `vmm_at` until done or interrupted, and reports.
ExitCode run_on(const net::SocketAddress& vmm_at, const stress::StressPlan& plan, const StressFlags& flags) {
  auto options = stress_options(flags.state_dir);
  options.parallel = flags.parallel;
  options.keep_failed = flags.keep_failed;
  options.prefetch = !flags.no_prefetch;
  if (::isatty(STDERR_FILENO)) options.on_progress = show_progress;
  stress::StressRunner runner(vmm_at, plan, options);
  std::fprintf(stderr, "vmpod stress: session %s, plan %s\n", runner.session().c_str(), plan.name.c_str());
  Result<stress::StressReport> result = fail(ErrorCode::kInternal, "not run");
  std::atomic<bool> done{false};
  std::thread worker([&] {
    result = runner.run();
    done = true;
  });
  SignalFd signals;
  bool interrupted = false;
  while (!done) {
    pollfd pfd{signals.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 200) > 0 && signals.fired()) {
      if (!interrupted) std::fprintf(stderr, "\nvmpod stress: interrupted, stopping the clones\n");
      interrupted = true;
      runner.interrupt();
    }
  }
  worker.join();
  if (options.on_progress) std::fprintf(stderr, "\n");
  if (!result) return report(result.error());
  if (flags.json) std::printf("%s\n", stress::report_json(*result).c_str());
  else std::printf("%s", stress::summary_table(*result).c_str());
  std::fprintf(stderr, "vmpod stress: report %s\n", stress::report_path(options.state_dir, runner.session()).c_str());
  if (!flags.junit.empty()) {
    if (auto written = write_file(flags.junit, stress::junit_xml(*result)); !written) return report(written.error());
  }
  if (!flags.json_path.empty()) {
    if (auto written = write_file(flags.json_path, stress::report_json(*result)); !written) {
      return report(written.error());
    }
  }
  if (result->interrupted || interrupted) return ExitCode::kInterrupted;
  return result->passed() ? ExitCode::kOk : ExitCode::kFailure;
}

// Every run the plan expands to, without running any: id, seed,
// parameters and command (--json: an array of them).
ExitCode list_runs(const stress::StressPlan& plan, const StressFlags& flags) {
  const bool json = flags.json;
  auto runs = stress::expand_runs(plan);
  if (!runs) return report(runs.error());
  nlohmann::json all = nlohmann::json::array();
  for (const auto& run : *runs) {
    if (json) {
      all.push_back({{"id", run.id}, {"iteration", run.iteration}, {"clone-index", run.clone},
                     {"params", run.params}, {"seed", run.seed}, {"command", run.command}});
      continue;
    }
    std::string params;
    for (const auto& [key, value] : run.params) params += key + "=" + value + " ";
    std::printf("%s  iteration %u clone %u  %sseed %llu\n    %s\n", run.id.c_str(), run.iteration, run.clone,
                params.c_str(), static_cast<unsigned long long>(run.seed), run.command.c_str());
  }
  if (json) std::printf("%s\n", all.dump(2).c_str());
  else std::printf("%zu runs, %u at a time\n", runs->size(),
                   flags.parallel ? flags.parallel : plan.test.parallel ? plan.test.parallel : plan.test.clones);
  return ExitCode::kOk;
}

ExitCode run_plan(const StressFlags& flags) {
  block_stop_signals();
  setup_logging("stress", flags.verbose);
  auto plan = stress::load_plan(flags.plan);
  if (!plan) return report(plan.error());
  if (flags.list) return list_runs(*plan, flags);
  if (!flags.vmm.empty() || std::getenv("VMPOD_VMM") != nullptr) {
    auto address = vmm_address(flags.vmm);
    if (!address) return report(address.error());
    return run_on(*address, *plan, flags);
  }
  // With no vmm named, a cluster for this command alone: its snapshots
  // (the base, the failures) end with it.
  auto config = local_cluster_config("/run/vmpod/stress-" + std::to_string(::getpid()), flags.memory_pods,
                                     flags.pod_capacity, flags.verbose);
  if (!config) return report(config.error());
  std::fprintf(stderr, "vmpod stress: starting a local cluster in %s (its snapshots end with this command; "
                       "`vmpod cluster` keeps them)\n", config->dir.c_str());
  auto cluster = vmm::LocalCluster::start(*config);
  if (!cluster) return report(cluster.error());
  ExitCode code = run_on((*cluster)->vmm_address(), *plan, flags);
  cluster->reset();
  // Failing runs are the plan's outcome, not the cluster's: only a harness
  // error keeps the pods' logs.
  finish_local_cluster_dir(config->dir, code != ExitCode::kOk && code != ExitCode::kFailure &&
                                            code != ExitCode::kInterrupted);
  return code;
}

ExitCode replay(const ReplayFlags& flags) {
  setup_logging("stress", false);
  auto id = stress::split_run_id(flags.run_id);
  if (!id) return report(id.error());
  auto options = stress_options(flags.state_dir);
  auto earlier = stress::load_report(options.state_dir, id->first);
  if (!earlier) return report(earlier.error());
  auto run = std::find_if(earlier->runs.begin(), earlier->runs.end(),
                          [&](const stress::RunResult& result) { return result.spec.id == id->second; });
  if (run == earlier->runs.end()) {
    return report(Error(ErrorCode::kNotFound, "session " + id->first + " has no run " + id->second));
  }
  auto address = vmm_address(flags.vmm);
  if (!address) return report(address.error());
  if (flags.rerun) {
    auto plan = stress::load_plan(earlier->plan_path);
    if (!plan) return report(plan.error().context("the run's plan"));
    stress::StressRunner runner(*address, *plan, options);
    auto again = runner.rerun(*earlier, id->second);
    if (!again) return report(again.error());
    stress::StressReport single = *earlier;
    single.runs = {*again};
    if (flags.json) {
      std::printf("%s\n", stress::report_json(single).c_str());
    } else {
      std::printf("%s: %s%s%s (seed %llu, clone %s)\n%s", flags.run_id.c_str(),
                  std::string(stress::verdict_name(again->judgement.verdict)).c_str(),
                  again->judgement.reason.empty() ? "" : ": ", again->judgement.reason.c_str(),
                  static_cast<unsigned long long>(again->spec.seed), again->clone.c_str(), again->output.c_str());
    }
    return again->judgement.verdict == stress::Verdict::kPassed ? ExitCode::kOk : ExitCode::kFailure;
  }
  auto vmm = connect_vmm(flags.vmm);
  if (!vmm) return report(vmm.error());
  auto clone = stress::replay_failure(**vmm, *run);
  if (!clone) return report(clone.error());
  if (flags.json) {
    std::printf("%s\n", vm_json(*clone).dump(2).c_str());
  } else {
    std::printf("%s: %s\n  command: %s\n  replayed as %s from snapshot %s\n  QMP %s, HMP %s\n  console %s\n"
                "  `vmpod stop %s` ends it\n",
                flags.run_id.c_str(), run->judgement.reason.c_str(), run->spec.command.c_str(), clone->name.c_str(),
                run->failure_snapshot.c_str(), clone->qmp_endpoint.c_str(), clone->hmp_endpoint.c_str(),
                clone->runtime.paths.serial_socket.c_str(), clone->name.c_str());
  }
  return ExitCode::kOk;
}

}  // namespace

void add_stress_verbs(CLI::App& app, Outcome& outcome) {
  auto flags = std::make_shared<StressFlags>();
  auto* cmd = app.add_subcommand("stress", "Run a stress plan in copy-on-write clones of a base snapshot");
  cmd->add_option("plan", flags->plan, "the plan (TOML, see docs/stress-plan.md)");
  cmd->add_option("--vmm", flags->vmm, "vmm control socket (default $VMPOD_VMM, else a local cluster for this run)");
  cmd->add_option("--state-dir", flags->state_dir, "where reports and code images are kept "
                                                   "(default $VMPOD_STATE_DIR/stress or /var/lib/vmpod/stress)");
  cmd->add_option("-j,--parallel", flags->parallel, "clones at a time (default: the plan's)");
  cmd->add_option("--junit", flags->junit, "also write a JUnit XML report here");
  cmd->add_option("--report", flags->json_path, "also write the JSON report here");
  cmd->add_flag("--json", flags->json, "print the JSON report instead of the table");
  cmd->add_flag("--list", flags->list, "print the runs the plan expands to (id, seed, command) and run none");
  cmd->add_flag("--keep-failed", flags->keep_failed, "keep failing clones running (after their snapshot)");
  cmd->add_flag("--no-prefetch", flags->no_prefetch, "clones do not fetch the base's working set ahead");
  cmd->add_option("--memory-pods", flags->memory_pods, "memory pods of a local cluster")->capture_default_str();
  cmd->add_option("--pod-capacity", flags->pod_capacity, "DRAM of each local memory pod")->capture_default_str();
  cmd->add_flag("-v,--verbose", flags->verbose, "debug logging");

  auto replay_flags = std::make_shared<ReplayFlags>();
  auto* replay_cmd = cmd->add_subcommand("replay", "Fork a failed run's snapshot again (or --rerun it from the base)");
  replay_cmd->add_option("run", replay_flags->run_id, "the run, as the report names it: SESSION-rNNNN")->required();
  replay_cmd->add_option("--vmm", replay_flags->vmm, "vmm control socket (default $VMPOD_VMM)");
  replay_cmd->add_option("--state-dir", replay_flags->state_dir, "where `vmpod stress` kept the report");
  replay_cmd->add_flag("--rerun", replay_flags->rerun, "run it again from the base snapshot, same seed and command");
  replay_cmd->add_flag("--json", replay_flags->json, "JSON for scripts");
  replay_cmd->callback([replay_flags, &outcome] { outcome.code = replay(*replay_flags); });

  cmd->callback([cmd, flags, &outcome] {
    if (!cmd->got_subcommand("replay")) {
      if (flags->plan.empty()) {
        std::fprintf(stderr, "vmpod stress: a plan is needed (vmpod stress PLAN)\n");
        outcome.code = ExitCode::kUsage;
        return;
      }
      outcome.code = run_plan(*flags);
    }
  });
}

}  // namespace vmpod::cli
