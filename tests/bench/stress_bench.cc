// stress_bench: `vmpod stress` against booting a fresh QEMU guest for each
// run of the same test, K runs at a time on both sides (shared/BENCHMARKS.md:
// alternated pairs after a warm-up pair).
//   stress.runs_per_min: vmpod = a batch of --runs runs of a stress-ng test
//     by StressRunner, in clones of the plan's base snapshot (built once,
//     before the pairs); fresh_boot = the same batch, each run in a plain
//     QEMU guest booted for it, which runs the plan's setup and readiness
//     check first. The goal: a ratio of at least 5.
//   stress.first_instruction_ms.p50 / .p99: from asking for the machine
//     (the fork, the QEMU start) until the agent started the test's
//     command in it, over every measured run of each side.
//   stress.burst.clonesN.per_s: N clones of the base snapshot in one fork
//     call, until each clone's agent has run a command; fresh_boot: N QEMU
//     guests started at once, until each agent has. One pair: N boots at
//     once take the machine for a minute.
//   stress.burst.clonesN.pod_bytes: what those N clones add to the memory
//     pods once their writes are back there, against N copies of the RAM.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/base/histogram.h>
#include <vmpod/base/units.h>
#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/cpuserver/qemu.h>
#include <vmpod/pods/memory_client.h>
#include <vmpod/pods/page_protocol.h>
#include <vmpod/stress/plan.h>
#include <vmpod/stress/runner.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

#include "bench_common.h"
#include "bench_flags.h"
#include "bench_guest.h"

namespace {

using namespace vmpod;
using bench::Figure;
using bench::Goal;

constexpr auto kTimeLimit = std::chrono::seconds(120);
constexpr auto kAgentTimeout = std::chrono::seconds(60);

// The test both sides run: a fixed amount of CPU and memory work that
// prints its metrics, as a stress test's would. Setup and readiness check
// are the plan's, which a fresh boot runs every time.
constexpr const char* kSetup = "stress-ng --version > /run/stress-ng-version";
constexpr const char* kReady = "test -s /run/stress-ng-version";
constexpr const char* kTest = "stress-ng --cpu 1 --cpu-ops 20 --vm 1 --vm-ops 20 --vm-bytes 16M --metrics-brief";

struct Options {
  unsigned pairs = 5;
  unsigned warmup = 1;
  unsigned runs = 8;
  unsigned parallel = 2;
  unsigned burst = 16;
  std::string memory = "256M";
  bool quick = false;
  std::optional<std::string> json;
  std::string dir;
  bool verbose = false;
};

std::string plan_text(const Options& o, unsigned clones) {
  return fmt::format(
      "name = \"stress-bench\"\n"
      "[guest]\nmemory = \"{}\"\n"
      "[base]\nsetup = \"{}\"\nready = \"{}\"\n"
      "[test]\ncommand = \"{}\"\nclones = {}\nparallel = {}\ntime_limit = \"{}s\"\n",
      o.memory, kSetup, kReady, kTest, clones, o.parallel, kTimeLimit.count());
}

Result<stress::StressPlan> make_plan(const Options& o, unsigned clones) {
  return stress::parse_plan(plan_text(o, clones), o.dir, "stress_bench");
}

stress::StressOptions runner_options(const Options& o) {
  stress::StressOptions options;
  options.state_dir = o.dir + "/state";
  options.default_kernel = bench::guest_image_file("vmlinux");
  options.default_initrd = bench::guest_image_file("initramfs.cpio.gz");
  options.parallel = o.parallel;
  return options;
}

// One batch of runs on one side: its wall time and each run's time from
// asking for the machine to the test's first instruction.
struct Batch {
  double seconds = 0;
  std::vector<double> first_instruction_ms;
};

Result<Batch> harness_batch(const Options& o, const net::SocketAddress& vmm) {
  auto plan = make_plan(o, o.runs);
  if (!plan) return fail(plan.error());
  stress::StressRunner runner(vmm, *plan, runner_options(o));
  const auto started = std::chrono::steady_clock::now();
  auto report = runner.run();
  Batch batch{bench::seconds_since(started), {}};
  if (!report) return fail(report.error().context("stress run"));
  if (!report->base_reused) return fail(ErrorCode::kInternal, "the harness rebuilt its base snapshot");
  for (const auto& run : report->runs) {
    if (run.judgement.verdict != stress::Verdict::kPassed) {
      return fail(ErrorCode::kInternal, run.spec.id + ": " + run.judgement.reason + "\n" + run.output);
    }
    batch.first_instruction_ms.push_back(run.first_instruction_ms);
  }
  if (report->interrupted || report->runs.size() != o.runs) {
    return fail(ErrorCode::kInternal, fmt::format("{} of {} runs reported", report->runs.size(), o.runs));
  }
  return batch;
}

// A plain QEMU guest booted for one command: its agent, once it answers.
class FreshGuest {
 public:
  static Result<std::unique_ptr<FreshGuest>> boot(const Options& o, const std::string& name, uint64_t memory) {
    cpuserver::QemuConfig config;
    config.guest = bench::guest_spec(name, memory);
    config.run_dir = o.dir + "/fresh/" + name;
    std::error_code ec;
    std::filesystem::remove_all(config.run_dir, ec);
    std::filesystem::create_directories(config.run_dir, ec);
    auto qemu = cpuserver::QemuProcess::start(config);
    if (!qemu) return fail(qemu.error().context(name));
    auto agent = cpuserver::GuestAgent::connect((*qemu)->paths().agent_socket, bench::kBootTimeout);
    if (!agent) return fail(agent.error().context(name + ": guest agent"));
    return std::unique_ptr<FreshGuest>(new FreshGuest(std::move(*qemu), std::move(*agent)));
  }
  ~FreshGuest() { (void)qemu_->shutdown(std::chrono::seconds(3)); }

  cpuserver::GuestAgent& agent() { return *agent_; }

 private:
  FreshGuest(std::unique_ptr<cpuserver::QemuProcess> qemu, std::unique_ptr<cpuserver::GuestAgent> agent)
      : qemu_(std::move(qemu)), agent_(std::move(agent)) {}
  std::unique_ptr<cpuserver::QemuProcess> qemu_;
  std::unique_ptr<cpuserver::GuestAgent> agent_;
};

Status run_checked(cpuserver::GuestAgent& agent, const std::string& command, const std::string& what) {
  auto ran = agent.run(command, kAgentTimeout);
  if (!ran) return fail(ran.error().context(what));
  if (ran->exit_code != 0) return fail(ErrorCode::kInternal, what + ": " + ran->output);
  return {};
}

// One fresh-boot run: boot, setup, readiness check, the test; returns the
// time from the QEMU start until the test started.
Result<double> fresh_run(const Options& o, const std::string& name, uint64_t memory) {
  const auto started = std::chrono::steady_clock::now();
  auto guest = FreshGuest::boot(o, name, memory);
  if (!guest) return fail(guest.error());
  VMPOD_TRY_CTX(run_checked((*guest)->agent(), kSetup, "setup"), name);
  VMPOD_TRY_CTX(run_checked((*guest)->agent(), kReady, "readiness check"), name);
  auto test = (*guest)->agent().run_with_limit(kTest, kTimeLimit);
  if (!test) return fail(test.error().context(name + ": test"));
  if (test->timed_out || test->exit_code != 0) {
    return fail(ErrorCode::kInternal, name + ": the test failed: " + test->output);
  }
  return std::chrono::duration<double, std::milli>(test->started_at - started).count();
}

// Runs `count` jobs on `threads` threads; the first error wins, and the
// jobs not yet started are skipped after it or after a stop request.
template <class Job>
Status run_parallel(unsigned count, unsigned threads, Job job) {
  std::atomic<unsigned> next{0};
  std::mutex mutex;
  Status first_error;
  std::atomic<bool> failed{false};
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < std::min(threads, count); ++t) {
    workers.emplace_back([&] {
      for (unsigned i = next++; i < count && !failed && !bench::stop_requested(); i = next++) {
        Status done = job(i);
        if (!done) {
          std::lock_guard lock(mutex);
          if (!failed.exchange(true)) first_error = std::move(done);
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  return first_error;
}

Result<Batch> fresh_batch(const Options& o, uint64_t memory, unsigned round) {
  Batch batch;
  std::mutex mutex;
  const auto started = std::chrono::steady_clock::now();
  Status done = run_parallel(o.runs, o.parallel, [&](unsigned i) -> Status {
    auto ms = fresh_run(o, fmt::format("fresh-{}-{}", round, i), memory);
    if (!ms) return fail(ms.error());
    std::lock_guard lock(mutex);
    batch.first_instruction_ms.push_back(*ms);
    return {};
  });
  batch.seconds = bench::seconds_since(started);
  if (!done) return fail(done.error());
  return batch;
}

struct RunsResult {
  Figure rate{"stress.runs_per_min", "vmpod", "fresh_boot", {}, {}};
  Figure p50{"stress.first_instruction_ms.p50", "vmpod", "fresh_boot", {}, {}};
  Figure p99{"stress.first_instruction_ms.p99", "vmpod", "fresh_boot", {}, {}};
};

Status measure_runs(const Options& o, const net::SocketAddress& vmm, uint64_t memory, RunsResult& result) {
  const unsigned rounds = o.warmup + o.pairs;
  std::vector<double> harness_ms, fresh_ms;
  for (unsigned round = 0; round < rounds && !bench::stop_requested(); ++round) {
    const bool measured = round >= o.warmup;
    const bool vmpod_first = round % 2 == 0;
    for (int turn = 0; turn < 2 && !bench::stop_requested(); ++turn) {
      const bool vmpod_turn = (turn == 0) == vmpod_first;
      auto batch = vmpod_turn ? harness_batch(o, vmm) : fresh_batch(o, memory, round);
      if (!batch) return fail(batch.error());
      if (bench::stop_requested()) break;
      const double per_min = o.runs / batch->seconds * 60.0;
      std::fprintf(stderr, "stress_bench: pair %u/%u%s: %-10s %u runs in %.1f s (%.1f runs/min)\n", round + 1,
                   rounds, measured ? "" : " (warm-up)", vmpod_turn ? "vmpod" : "fresh_boot", o.runs,
                   batch->seconds, per_min);
      if (!measured) continue;
      (vmpod_turn ? result.rate.subject : result.rate.baseline).push_back(per_min);
      auto& all = vmpod_turn ? harness_ms : fresh_ms;
      all.insert(all.end(), batch->first_instruction_ms.begin(), batch->first_instruction_ms.end());
      (vmpod_turn ? result.p50.subject : result.p50.baseline).push_back(vmpod::percentile(batch->first_instruction_ms, 0.5));
      (vmpod_turn ? result.p99.subject : result.p99.baseline).push_back(vmpod::percentile(batch->first_instruction_ms, 0.99));
    }
  }
  // Each pair's percentiles make the ratios; the figures' values are over
  // every measured run of each side.
  if (!harness_ms.empty() && !fresh_ms.empty()) {
    std::fprintf(stderr, "stress_bench: first instruction over all runs: vmpod p50 %.0f p99 %.0f ms, fresh_boot "
                         "p50 %.0f p99 %.0f ms\n",
                 vmpod::percentile(harness_ms, 0.5), vmpod::percentile(harness_ms, 0.99),
                 vmpod::percentile(fresh_ms, 0.5), vmpod::percentile(fresh_ms, 0.99));
  }
  return {};
}

// Every page the cluster's memory pods hold.
Result<uint64_t> pod_pages_held(const vmm::LocalCluster& cluster) {
  uint64_t held = 0;
  for (const auto& address : cluster.memory_pod_addresses()) {
    auto pod = pods::MemoryPodClient::connect(address, {});
    if (!pod) return fail(pod.error().context("memory pod"));
    auto stats = (*pod)->stats();
    if (!stats) return fail(stats.error().context("memory pod " + (*pod)->pod_id()));
    held += stats->pages_held;
  }
  return held;
}

struct BurstResult {
  Figure rate;
  Figure memory;
};

Status measure_burst(const Options& o, vmm::LocalCluster& cluster, const std::string& base, uint64_t memory,
                     BurstResult& result) {
  auto vmm = vmm::VmmClient::connect(cluster.vmm_address(), std::chrono::seconds(5));
  if (!vmm) return fail(vmm.error());
  auto before = pod_pages_held(cluster);
  if (!before) return fail(before.error());
  std::fprintf(stderr, "stress_bench: burst: %u clones of %s in one fork call\n", o.burst, base.c_str());
  vmm::ForkRequest request;
  request.snapshot = base;
  request.count = o.burst;
  request.name_prefix = "burst";
  const auto started = std::chrono::steady_clock::now();
  auto clones = (*vmm)->fork_snapshot(request);
  if (!clones) return fail(clones.error().context("fork " + base));
  Status answered = run_parallel(o.burst, o.burst, [&](unsigned i) -> Status {
    auto agent = cpuserver::GuestAgent::connect(clones->at(i).runtime.paths.agent_socket, kAgentTimeout);
    if (!agent) return fail(agent.error().context(clones->at(i).name));
    return run_checked(**agent, "true", clones->at(i).name);
  });
  const double vmpod_s = bench::seconds_since(started);
  Status held = [&]() -> Status {
    if (!answered) return answered;
    // What the clones wrote counts once it is in the pods, not while it is
    // still dirty in the compute pod's page cache.
    for (const auto& clone : *clones) VMPOD_TRY_CTX((*vmm)->drop_cache(clone.name), "writing back " + clone.name);
    auto after = pod_pages_held(cluster);
    if (!after) return fail(after.error());
    const uint64_t added = *after > *before ? *after - *before : 0;
    result.memory.subject.push_back(static_cast<double>(added * pods::kPageSize));
    result.memory.baseline.push_back(static_cast<double>(o.burst) * static_cast<double>(memory));
    std::fprintf(stderr, "stress_bench: burst: %u clones answered in %.2f s and added %s to the memory pods\n",
                 o.burst, vmpod_s, format_bytes(added * pods::kPageSize).c_str());
    return {};
  }();
  for (const auto& clone : *clones) (void)(*vmm)->stop_vm(clone.name);
  if (!held) return held;
  if (bench::stop_requested()) return {};

  std::fprintf(stderr, "stress_bench: burst: %u fresh QEMU guests at once\n", o.burst);
  const auto fresh_started = std::chrono::steady_clock::now();
  Status booted = run_parallel(o.burst, o.burst, [&](unsigned i) -> Status {
    auto guest = FreshGuest::boot(o, fmt::format("burst-{}", i), memory);
    if (!guest) return fail(guest.error());
    return run_checked((*guest)->agent(), "true", "burst guest");
  });
  if (!booted) return booted;
  const double fresh_s = bench::seconds_since(fresh_started);
  std::fprintf(stderr, "stress_bench: burst: %u fresh guests answered in %.2f s\n", o.burst, fresh_s);
  result.rate.subject.push_back(o.burst / vmpod_s);
  result.rate.baseline.push_back(o.burst / fresh_s);
  return {};
}

struct Results {
  RunsResult runs;
  BurstResult burst;
  std::string base;
  double base_s = 0;
};

Status measure(const Options& o, uint64_t memory, Results& results) {
  vmm::LocalClusterConfig config;
  config.vmpod_binary = bench::vmpod_binary();
  config.dir = o.dir + "/cluster";
  config.memory_pods = 2;
  // The base's regions and versions hold at most its RAM, half on each pod;
  // the rest of each pod's room is for what the clones write.
  config.memory_pod_capacity = 2 * memory;
  config.verbose = o.verbose;
  std::fprintf(stderr, "stress_bench: starting a cluster and building the plan's base snapshot\n");
  auto cluster = vmm::LocalCluster::start(config);
  if (!cluster) return fail(cluster.error());
  // One run builds the base; every batch after reuses it, as every
  // `vmpod stress` invocation after the first does.
  auto plan = make_plan(o, 1);
  if (!plan) return fail(plan.error());
  stress::StressRunner first((*cluster)->vmm_address(), *plan, runner_options(o));
  auto built = first.run();
  if (!built) return fail(built.error().context("building the base"));
  if (!built->passed()) return fail(ErrorCode::kInternal, "the first run failed: " + stress::summary_table(*built));
  results.base = built->base_snapshot;
  results.base_s = built->base_ms / 1000.0;
  if (bench::stop_requested()) return {};
  VMPOD_TRY_CTX(measure_runs(o, (*cluster)->vmm_address(), memory, results.runs), "runs");
  if (bench::stop_requested()) return {};
  return measure_burst(o, **cluster, results.base, memory, results.burst);
}

void add_figure(nlohmann::json& doc, const Figure& figure) {
  std::printf("%s\n", figure.line().c_str());
  doc["figures"].push_back(figure.to_json());
}

void add_goal(nlohmann::json& doc, const Goal& goal) {
  std::printf("%s\n", goal.line().c_str());
  doc["goals"].push_back(goal.to_json());
}

int run(int argc, char** argv) {
  bench::install_stop_signals();
  Options o;
  CLI::App app{"vmpod stress vs a fresh QEMU boot per run (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "2 runs a batch, 1 pair, no warm-up, a burst of 2: checks that it runs",
                            .pairs = "measured pairs of batches",
                            .warmup = "warm-up pairs",
                            .dir = "sockets, logs and state (default: a fresh /tmp directory, removed after)"});
  app.add_option("--runs", o.runs, "runs per batch")->capture_default_str()->check(CLI::Range(1u, 1000u));
  app.add_option("-j,--parallel", o.parallel, "runs at a time on both sides")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  app.add_option("--burst", o.burst, "clones forked at once for the burst figures")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  app.add_option("--memory", o.memory, "guest RAM")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.apply();
  if (o.quick) {
    o.runs = 2;
    o.burst = 2;
  }
  auto memory = parse_size(o.memory);
  if (!memory) {
    std::fprintf(stderr, "stress_bench: --memory %s: %s\n", o.memory.c_str(), memory.error().to_string().c_str());
    return 2;
  }
  for (const auto& file : {bench::guest_image_file("vmlinux"), bench::vmpod_binary()}) {
    if (!std::filesystem::exists(file)) {
      std::fprintf(stderr, "stress_bench: %s does not exist (build the guest image and vmpod)\n", file.c_str());
      return 2;
    }
  }
  const bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-stress-{}", ::getpid());
  const auto started = std::chrono::steady_clock::now();
  const std::string load_at_start = bench::load_average();

  Results results;
  results.burst.rate = {fmt::format("stress.burst.clones{}.per_s", o.burst), "vmpod", "fresh_boot", {}, {}};
  results.burst.memory = {fmt::format("stress.burst.clones{}.pod_bytes", o.burst), "vmpod", "full_copies", {}, {}};
  std::string failure;
  if (Status measured = measure(o, *memory, results); !measured) failure = measured.error().to_string();
  nlohmann::json doc;
  if (failure.empty() && !bench::stop_requested()) {
    std::printf("# stress_bench pairs=%u warmup=%u runs=%u parallel=%u burst=%u memory=%s accel=tcg memory_pods=2 "
                "provider=tcp loadavg=%s..%s cpus=%u\n",
                o.pairs, o.warmup, o.runs, o.parallel, o.burst, bench::size_label(*memory).c_str(),
                load_at_start.c_str(), bench::load_average().c_str(), std::thread::hardware_concurrency());
    std::printf("# values: medians; runs per minute, clones per second (higher is better), first instruction in ms, "
                "pod bytes (one pair); ratio: median of per-pair subject/baseline\n");
    std::printf("# detail stress.base base_s=%s snapshot=%s\n", bench::format_value(results.base_s).c_str(),
                results.base.c_str());
    doc["bench"] = "stress";
    doc["figures"] = nlohmann::json::array();
    doc["goals"] = nlohmann::json::array();
    doc["details"]["stress.base"] = {{"base_s", results.base_s}, {"snapshot", results.base}};
    for (const Figure* figure : {&results.runs.rate, &results.runs.p50, &results.runs.p99, &results.burst.rate,
                                 &results.burst.memory}) {
      add_figure(doc, *figure);
    }
    const double speedup = bench::summarize(results.runs.rate.ratios()).median;
    add_goal(doc, {results.runs.rate.name, "ratio", false, 5, speedup,
                   "test runs per minute with the harness at least 5x a fresh boot per run"});
    std::fflush(stdout);
    doc["config"] = {{"pairs", o.pairs},       {"warmup", o.warmup}, {"runs", o.runs}, {"parallel", o.parallel},
                     {"burst", o.burst},       {"memory", o.memory}, {"quick", o.quick}};
    doc["loadavg"] = {load_at_start, bench::load_average()};
  }
  return bench::finish("stress_bench", o.dir, own_dir, failure, doc, o.json, started);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
