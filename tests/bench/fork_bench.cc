// fork_bench: forks of a snapshot of a booted guest that has used half its
// RAM, for each --sizes guest RAM size, against QEMU's own way to start such
// a guest again (shared/BENCHMARKS.md: alternated pairs, one warm-up pair).
//   fork.latency_ms.SIZE: vmpod = one fork_snapshot call for one clone (it
//     returns once the clone's vCPUs run: new copy-on-write regions over
//     the snapshot's versions, a QEMU loading only the device state);
//     qemu = a fresh QEMU restoring the same kind of guest, RAM included,
//     from a migration stream in a file, until its vCPUs run. The issue's
//     goals: at most 150 ms at the largest size, and flat in RAM size.
//   fork.task_s.prefetch (first size): from the fork request until a fixed
//     task in the clone is done, with the snapshot's working set prefetched
//     ahead of the clone and without.
//   fork.memory.clonesN (first size): what N clones forked in one call and
//     running add to the memory pods, against N full copies of the RAM.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/base/units.h>
#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/cpuserver/qemu.h>
#include <vmpod/pods/page_protocol.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

#include "bench_common.h"
#include "bench_flags.h"
#include "bench_guest.h"

namespace {

using namespace vmpod;
using bench::Figure;
using bench::Goal;

constexpr auto kMigrationTimeout = std::chrono::seconds(300);
constexpr auto kAgentTimeout = std::chrono::seconds(60);
constexpr auto kTaskTimeout = std::chrono::seconds(180);
// How often the host asks the clone whether its task is done: each ask runs
// a command in the guest, which takes the task's CPU under TCG.
constexpr auto kTaskPoll = std::chrono::milliseconds(100);
// The vmm records the working set of a snapshot's first clone for 5 s after
// its start; the margin lets that window end inside the clone.
constexpr auto kRecordingWait = std::chrono::seconds(6);
constexpr auto kBurstRun = std::chrono::seconds(2);
constexpr auto kReleaseTimeout = std::chrono::seconds(30);

// The snapshot of a guest that filled half its RAM, and the one taken after
// it also started the task (first size only).
constexpr const char* kReadySnapshot = "ready";
constexpr const char* kTaskSnapshot = "task";

struct Options {
  unsigned pairs = 5;
  unsigned warmup = 1;
  unsigned clones = 16;
  bool quick = false;
  std::optional<std::string> json;
  std::string dir;
  std::vector<std::string> sizes{"256M", "2G"};
  bool verbose = false;
};

// The fixed task: a memcheck writes 64 MiB and waits for /tmp/go to verify
// it. Started in the base before its snapshot, so that every clone finds
// it waiting and verifying reads that RAM back through the clone's regions.
Status start_task(const std::string& agent_socket) {
  return bench::run_in_guest(agent_socket,
                      "vmpod-memcheck --size-mib 64 --seed 3 --wait-file /tmp/go >/tmp/task.out 2>&1 & "
                      "while ! grep -q 'MEMCHECK written' /tmp/task.out; do sleep 0.2; done",
                      "starting the task");
}

// Lets the clone's task go and waits until it verified its pattern; returns
// early, without an error, on Ctrl-C (the caller then keeps no sample).
Status run_task(const vmm::VmRecord& clone) {
  auto agent = cpuserver::GuestAgent::connect(clone.runtime.paths.agent_socket, kAgentTimeout);
  if (!agent) return fail(agent.error().context(clone.name + ": guest agent"));
  auto go = (*agent)->run("touch /tmp/go", kAgentTimeout);
  if (!go) return fail(go.error().context(clone.name + ": starting the task"));
  const auto deadline = std::chrono::steady_clock::now() + kTaskTimeout;
  while (bench::sleep_unless_stopped(kTaskPoll)) {
    auto out = (*agent)->run("cat /tmp/task.out", kAgentTimeout);
    if (!out) return fail(out.error().context(clone.name + ": the task's output"));
    const std::string& log = out->output;
    const bool failed = log.find("FAILED") != std::string::npos;
    if (failed || log.find("MEMCHECK verified") != std::string::npos) {
      if (failed || log.find("MEMCHECK verified ok") == std::string::npos) {
        return fail(ErrorCode::kInternal, clone.name + ": the task failed: " + log);
      }
      return {};
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(ErrorCode::kUnavailable, clone.name + ": the task did not finish in time: " + log);
    }
  }
  return {};
}

// Forks and checks that every clone runs.
Result<std::vector<vmm::VmRecord>> fork_clones(vmm::VmmClient& vmm, const vmm::ForkRequest& request) {
  auto clones = vmm.fork_snapshot(request);
  if (!clones) return fail(clones.error().context("fork " + request.snapshot));
  for (const auto& clone : *clones) {
    if (clone.state != vmm::VmState::kRunning) {
      return fail(ErrorCode::kInternal, "fork " + request.snapshot + ": " + clone.name + " is not running: " +
                                            clone.reason);
    }
  }
  if (clones->size() != request.count) {
    return fail(ErrorCode::kInternal, fmt::format("fork {}: {} clones for {}", request.snapshot, clones->size(),
                                                  request.count));
  }
  return clones;
}

vmm::ForkRequest fork_request(const std::string& snapshot, unsigned count, bool prefetch) {
  vmm::ForkRequest request;
  request.snapshot = snapshot;
  request.count = count;
  request.prefetch = prefetch;
  return request;
}

// Every page the memory pods hold, as `vm`'s statistics report them: they
// carry the whole counters of each of its memory pods, here both pods.
Result<uint64_t> pod_pages_held(vmm::VmmClient& vmm, const std::string& vm) {
  auto stats = vmm.vm_stats(vm);
  if (!stats) return fail(stats.error().context("statistics of " + vm));
  uint64_t held = 0;
  for (const auto& pod : stats->memory_pods) held += pod.pages_held;
  return held;
}

// A plain-RAM guest saved whole, RAM included, to a file by QEMU's own
// migration; each restore is a fresh QEMU reading it back. The file goes
// with this object.
class SavedPlainGuest {
 public:
  static Result<std::unique_ptr<SavedPlainGuest>> save(const cpuserver::GuestSpec& spec, const std::string& dir) {
    std::unique_ptr<SavedPlainGuest> saved(new SavedPlainGuest(spec, dir));
    auto qemu = saved->start(false);
    if (!qemu) return fail(qemu.error());
    VMPOD_TRY_CTX(bench::fill_half((*qemu)->paths().agent_socket, spec.memory_bytes), "plain guest");
    // Paused, the stream is one pass over a RAM that does not change: it
    // does not depend on QEMU 7.2's dirty tracking, which loses pages of
    // TCG guests (shared/FACTS.md).
    VMPOD_TRY_CTX((*qemu)->pause(), "plain guest");
    VMPOD_TRY_CTX((*qemu)->migrate_out("exec:cat > '" + saved->stream_ + "'", /*ram_shared=*/false),
                  "saving the plain guest");
    auto written = (*qemu)->wait_for_migration(kMigrationTimeout);
    if (!written) return fail(written.error().context("saving the plain guest"));
    (void)(*qemu)->shutdown(std::chrono::seconds(3));
    return saved;
  }

  ~SavedPlainGuest() {
    std::error_code ec;
    std::filesystem::remove(stream_, ec);
  }

  // Wall time in ms from starting QEMU until the restored guest's vCPUs
  // run; QEMU is shut down after, untimed.
  Result<double> restore_ms() {
    const auto started = std::chrono::steady_clock::now();
    auto qemu = start(true);
    if (!qemu) return fail(qemu.error());
    VMPOD_TRY_CTX((*qemu)->migrate_in("exec:cat '" + stream_ + "'", /*ram_shared=*/false), "restoring the plain guest");
    auto loaded = (*qemu)->wait_for_migration(kMigrationTimeout);
    if (!loaded) return fail(loaded.error().context("restoring the plain guest"));
    VMPOD_TRY_CTX((*qemu)->resume(), "restored plain guest");
    const double ms = bench::seconds_since(started) * 1000.0;
    (void)(*qemu)->shutdown(std::chrono::seconds(3));
    return ms;
  }

  uint64_t stream_bytes() const {
    std::error_code ec;
    auto bytes = std::filesystem::file_size(stream_, ec);
    return ec ? 0 : bytes;
  }

 private:
  SavedPlainGuest(cpuserver::GuestSpec spec, const std::string& dir)
      : spec_(std::move(spec)), dir_(dir), stream_(dir + "/plain.stream") {}

  Result<std::unique_ptr<cpuserver::QemuProcess>> start(bool incoming) {
    cpuserver::QemuConfig config;
    config.guest = spec_;
    config.run_dir = dir_ + (incoming ? "/plain-restored" : "/plain-saved");
    config.incoming = incoming;
    std::error_code ec;
    std::filesystem::create_directories(config.run_dir, ec);
    return cpuserver::QemuProcess::start(config);
  }

  cpuserver::GuestSpec spec_;
  std::string dir_;
  std::string stream_;
};

struct LatencyResult {
  Figure latency;
  uint64_t device_state_bytes = 0;
  uint64_t stream_bytes = 0;
};

struct TaskResult {
  Figure task{"fork.task_s.prefetch", "prefetch", "no_prefetch", {}, {}};
  uint64_t prefetched_bytes = 0;  // of the last prefetching clone measured
  uint64_t working_set_bytes = 0;
};

struct MemoryResult {
  Figure memory;
  double fork_s = 0;
  unsigned clones = 0;
};

struct Results {
  std::vector<LatencyResult> latency;  // one per size, in --sizes order
  std::optional<TaskResult> task;
  std::optional<MemoryResult> memory;
};

// Wall time in ms of one fork of one clone; the clone is stopped after, untimed.
Result<double> fork_ms(vmm::VmmClient& vmm) {
  const auto started = std::chrono::steady_clock::now();
  auto clones = fork_clones(vmm, fork_request(kReadySnapshot, 1, true));
  const double ms = bench::seconds_since(started) * 1000.0;
  if (!clones) return fail(clones.error());
  VMPOD_TRY_CTX(vmm.stop_vm(clones->front().name), "stopping " + clones->front().name);
  return ms;
}

Result<LatencyResult> measure_latency(const Options& o, vmm::VmmClient& vmm, SavedPlainGuest& plain,
                                      uint64_t memory, uint64_t device_state_bytes) {
  LatencyResult result{{"fork.latency_ms." + bench::size_label(memory), "vmpod", "qemu", {}, {}},
                       device_state_bytes,
                       plain.stream_bytes()};
  const unsigned rounds = o.warmup + o.pairs;
  for (unsigned round = 0; round < rounds && !bench::stop_requested(); ++round) {
    const bool measured = round >= o.warmup;
    const bool vmpod_first = round % 2 == 0;
    for (int turn = 0; turn < 2 && !bench::stop_requested(); ++turn) {
      const bool vmpod_turn = (turn == 0) == vmpod_first;
      auto ms = vmpod_turn ? fork_ms(vmm) : plain.restore_ms();
      if (!ms) return fail(ms.error());
      std::fprintf(stderr, "fork_bench: %s latency pair %u/%u%s: %-5s %.1f ms\n", bench::size_label(memory).c_str(), round + 1,
                   rounds, measured ? "" : " (warm-up)", vmpod_turn ? "vmpod" : "qemu", *ms);
      if (measured) (vmpod_turn ? result.latency.subject : result.latency.baseline).push_back(*ms);
    }
  }
  return result;
}

Result<TaskResult> measure_task(const Options& o, vmm::VmmClient& vmm) {
  TaskResult result;
  // The snapshot's first clone records what it reads; it runs the task, so
  // that what later clones prefetch is the task's working set.
  std::fprintf(stderr, "fork_bench: task: a first clone runs it and records its working set\n");
  auto recorder = fork_clones(vmm, fork_request(kTaskSnapshot, 1, true));
  if (!recorder) return fail(recorder.error());
  const auto recording_since = std::chrono::steady_clock::now();
  VMPOD_TRY_CTX(run_task(recorder->front()), "recording clone");
  const auto waited = std::chrono::steady_clock::now() - recording_since;
  if (waited < kRecordingWait) {
    bench::sleep_unless_stopped(std::chrono::duration_cast<std::chrono::milliseconds>(kRecordingWait - waited));
  }
  VMPOD_TRY_CTX(vmm.stop_vm(recorder->front().name), "stopping " + recorder->front().name);

  const unsigned rounds = o.warmup + o.pairs;
  for (unsigned round = 0; round < rounds && !bench::stop_requested(); ++round) {
    const bool measured = round >= o.warmup;
    const bool prefetch_first = round % 2 == 0;
    for (int turn = 0; turn < 2 && !bench::stop_requested(); ++turn) {
      const bool prefetch = (turn == 0) == prefetch_first;
      const auto started = std::chrono::steady_clock::now();
      auto clone = fork_clones(vmm, fork_request(kTaskSnapshot, 1, prefetch));
      if (!clone) return fail(clone.error());
      const vmm::VmRecord& vm = clone->front();
      VMPOD_TRY_CTX(run_task(vm), "measured clone");
      const double seconds = bench::seconds_since(started);
      if (bench::stop_requested()) break;
      if (prefetch && measured) {
        auto stats = vmm.vm_stats(vm.name);
        if (!stats) return fail(stats.error().context("statistics of " + vm.name));
        result.prefetched_bytes = stats->podfs.prefetched_bytes;
      }
      VMPOD_TRY_CTX(vmm.stop_vm(vm.name), "stopping " + vm.name);
      std::fprintf(stderr, "fork_bench: task pair %u/%u%s: %-11s %.2f s\n", round + 1, rounds,
                   measured ? "" : " (warm-up)", prefetch ? "prefetch" : "no_prefetch", seconds);
      if (measured) (prefetch ? result.task.subject : result.task.baseline).push_back(seconds);
    }
  }
  auto snapshot = vmm.snapshot(kTaskSnapshot);
  if (!snapshot) return fail(snapshot.error());
  result.working_set_bytes = snapshot->working_set_bytes;
  return result;
}

// The memory N clones add: a size, not a timing, so the figure has one
// pair (the same clones hold about the same pages however busy the machine
// is); the fork call's wall time gives the burst rate beside it.
Result<MemoryResult> measure_memory(const Options& o, vmm::VmmClient& vmm, uint64_t memory) {
  MemoryResult result{{fmt::format("fork.memory.clones{}", o.clones), "vmpod", "full_copies", {}, {}}, 0, o.clones};
  // The base is paused at its snapshot: it writes nothing meanwhile.
  auto before = pod_pages_held(vmm, "base");
  if (!before) return fail(before.error());
  std::fprintf(stderr, "fork_bench: memory: forking %u clones in one call\n", o.clones);
  const auto started = std::chrono::steady_clock::now();
  auto clones = fork_clones(vmm, fork_request(kReadySnapshot, o.clones, true));
  result.fork_s = bench::seconds_since(started);
  if (!clones) return fail(clones.error());
  if (!bench::sleep_unless_stopped(kBurstRun)) return result;
  // What the clones wrote is counted once it is in the pods, not while it
  // is still dirty in the compute pod's page cache.
  for (const auto& clone : *clones) VMPOD_TRY_CTX(vmm.drop_cache(clone.name), "writing back " + clone.name);
  auto running = pod_pages_held(vmm, clones->front().name);
  if (!running) return fail(running.error());
  for (const auto& clone : *clones) VMPOD_TRY_CTX(vmm.stop_vm(clone.name), "stopping " + clone.name);
  const uint64_t added_pages = *running > *before ? *running - *before : 0;
  result.memory.subject.push_back(static_cast<double>(added_pages * pods::kPageSize));
  result.memory.baseline.push_back(static_cast<double>(o.clones) * static_cast<double>(memory));
  std::fprintf(stderr, "fork_bench: memory: %u clones forked in %.2f s, added %s to the memory pods\n", o.clones,
               result.fork_s, format_bytes(added_pages * pods::kPageSize).c_str());

  // Stopped clones give their own pages back; the snapshot's versions stay
  // until it is deleted, so the pods go back to where they were.
  uint64_t held = *running;
  const auto deadline = std::chrono::steady_clock::now() + kReleaseTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto now_held = pod_pages_held(vmm, "base");
    if (!now_held) return fail(now_held.error());
    held = *now_held;
    if (held <= *before || !bench::sleep_unless_stopped(std::chrono::milliseconds(200))) break;
  }
  if (held > *before && !bench::stop_requested()) {
    return fail(ErrorCode::kInternal,
                fmt::format("the memory pods hold {} pages {} s after the clones stopped, {} before the fork",
                            held, kReleaseTimeout.count(), *before));
  }
  return result;
}

Status measure(const Options& o, uint64_t memory, bool first, Results& results) {
  const std::string dir = o.dir + "/" + bench::size_label(memory);
  vmm::LocalClusterConfig config;
  config.vmpod_binary = bench::vmpod_binary();
  config.dir = dir + "/cluster";
  config.memory_pods = 2;
  config.compute_pods = 1;
  // The base's regions and versions hold at most its RAM, half of it on
  // each pod; the other half of each pod's room is for what clones write.
  config.memory_pod_capacity = 2 * memory;
  config.verbose = o.verbose;
  std::fprintf(stderr, "fork_bench: %s: starting a cluster, booting and snapshotting the base guest\n",
               bench::size_label(memory).c_str());
  auto cluster = vmm::LocalCluster::start(config);
  if (!cluster) return fail(cluster.error());
  auto vmm = vmm::VmmClient::connect((*cluster)->vmm_address(), std::chrono::seconds(5));
  if (!vmm) return fail(vmm.error());
  vmm::VmRequest request;
  request.guest = bench::guest_spec("base", memory);
  auto base = (*vmm)->create_vm(request);
  if (!base) return fail(base.error());
  VMPOD_TRY_CTX(bench::fill_half(base->runtime.paths.agent_socket, memory), "vmpod guest");
  // The base pauses at its last snapshot: an idle TCG guest still takes CPU
  // from what is measured, and a paused one writes nothing to the pods.
  auto ready = (*vmm)->snapshot_vm("base", kReadySnapshot, /*stay_paused=*/!first);
  if (!ready) return fail(ready.error());
  if (first) {
    VMPOD_TRY_CTX(start_task(base->runtime.paths.agent_socket), "vmpod guest");
    auto task = (*vmm)->snapshot_vm("base", kTaskSnapshot, /*stay_paused=*/true);
    if (!task) return fail(task.error());
  }
  if (bench::stop_requested()) return {};
  std::fprintf(stderr, "fork_bench: %s: booting a plain QEMU guest and saving it to a file\n", bench::size_label(memory).c_str());
  auto plain = SavedPlainGuest::save(bench::guest_spec("base", memory), dir);
  if (!plain) return fail(plain.error());
  if (bench::stop_requested()) return {};

  auto latency = measure_latency(o, **vmm, **plain, memory, ready->device_state_bytes);
  if (!latency) return fail(latency.error());
  results.latency.push_back(std::move(*latency));
  plain->reset();  // its stream, up to a GiB, is not needed any more
  if (!first || bench::stop_requested()) return {};

  auto task = measure_task(o, **vmm);
  if (!task) return fail(task.error());
  results.task = std::move(*task);
  if (bench::stop_requested()) return {};
  auto held = measure_memory(o, **vmm, memory);
  if (!held) return fail(held.error());
  results.memory = std::move(*held);
  return {};
}

// `# detail NAME key=value ...`: what explains a figure, not measured in pairs.
void print_detail(nlohmann::json& doc, const std::string& name,
                  const std::vector<std::pair<std::string, nlohmann::json>>& values) {
  std::string line = "# detail " + name;
  for (const auto& [key, value] : values) {
    line += " " + key + "=" + (value.is_number_float() ? bench::format_value(value.get<double>()) : value.dump());
    doc["details"][name][key] = value;
  }
  std::printf("%s\n", line.c_str());
}

int run(int argc, char** argv) {
  bench::install_stop_signals();
  Options o;
  CLI::App app{"Snapshot fork: vmpod clones vs QEMU restoring a saved guest (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "256M only, 1 pair, no warm-up, 2 clones: checks that it runs",
                            .pairs = "measured pairs per figure",
                            .warmup = "warm-up pairs per figure",
                            .dir = "sockets and logs (default: a fresh /tmp directory, removed after)"});
  app.add_option("--sizes", o.sizes, "guest RAM sizes")->capture_default_str();
  app.add_option("--clones", o.clones, "clones forked at once for the memory figure")
      ->capture_default_str()
      ->check(CLI::Range(1u, 256u));
  CLI11_PARSE(app, argc, argv);
  flags.apply();
  if (o.quick) {
    o.clones = 2;
    o.sizes = {"256M"};
  }
  std::vector<uint64_t> sizes;
  for (const auto& text : o.sizes) {
    auto size = parse_size(text);
    if (!size) {
      std::fprintf(stderr, "fork_bench: --sizes %s: %s\n", text.c_str(), size.error().to_string().c_str());
      return 2;
    }
    sizes.push_back(*size);
  }
  for (const auto& file : {bench::guest_image_file("vmlinux"), bench::vmpod_binary()}) {
    if (!std::filesystem::exists(file)) {
      std::fprintf(stderr, "fork_bench: %s does not exist (build the guest image and vmpod)\n", file.c_str());
      return 2;
    }
  }
  const bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-fork-{}", ::getpid());
  const auto started = std::chrono::steady_clock::now();
  const std::string load_at_start = bench::load_average();

  std::string failure;
  Results results;
  for (size_t i = 0; i < sizes.size() && !bench::stop_requested(); ++i) {
    Status measured = measure(o, sizes[i], i == 0, results);
    if (!measured) {
      failure = measured.error().to_string();
      break;
    }
  }
  nlohmann::json doc;
  if (failure.empty() && !bench::stop_requested()) {
    std::printf("# fork_bench pairs=%u warmup=%u clones=%u accel=tcg memory_pods=2 provider=tcp loadavg=%s..%s cpus=%u\n",
                o.pairs, o.warmup, o.clones, load_at_start.c_str(), bench::load_average().c_str(),
                std::thread::hardware_concurrency());
    std::printf("# values: medians; latency in ms, task in s, memory in bytes (one pair); ratio: median of per-pair "
                "subject/baseline (lower is better)\n");
    doc["bench"] = "fork";
    doc["figures"] = nlohmann::json::array();
    doc["goals"] = nlohmann::json::array();
    doc["details"] = nlohmann::json::object();
    for (const auto& result : results.latency) {
      std::printf("%s\n", result.latency.line().c_str());
      doc["figures"].push_back(result.latency.to_json());
      print_detail(doc, result.latency.name,
                   {{"device_state_bytes", result.device_state_bytes}, {"qemu_stream_bytes", result.stream_bytes}});
    }
    const Figure& largest = results.latency.back().latency;
    const double largest_median = bench::summarize(largest.subject).median;
    Goal fast{largest.name, "vmpod", true, 150, largest_median, "one clone running within 150 ms at the largest size"};
    std::printf("%s\n", fast.line().c_str());
    doc["goals"].push_back(fast.to_json());
    if (results.latency.size() > 1) {
      const double smallest_median = bench::summarize(results.latency.front().latency.subject).median;
      Goal flat{largest.name, "vmpod_vs_smallest", true, 1.2, largest_median / smallest_median,
                "vmpod's median at the largest size over the smallest: flat in RAM size"};
      std::printf("%s\n", flat.line().c_str());
      doc["goals"].push_back(flat.to_json());
    }
    const TaskResult& task = *results.task;
    std::printf("%s\n", task.task.line().c_str());
    doc["figures"].push_back(task.task.to_json());
    print_detail(doc, task.task.name,
                 {{"prefetched_bytes", task.prefetched_bytes}, {"working_set_bytes", task.working_set_bytes}});
    const MemoryResult& held = *results.memory;
    std::printf("%s\n", held.memory.line().c_str());
    doc["figures"].push_back(held.memory.to_json());
    print_detail(doc, "fork.burst.clones_per_s",
                 {{"value", static_cast<double>(held.clones) / held.fork_s}, {"clones", held.clones},
                  {"fork_s", held.fork_s}});
    std::fflush(stdout);
    doc["config"] = {{"sizes", o.sizes}, {"pairs", o.pairs},   {"warmup", o.warmup},
                     {"clones", o.clones}, {"quick", o.quick}};
    doc["loadavg"] = {load_at_start, bench::load_average()};
  }
  return bench::finish("fork_bench", o.dir, own_dir, failure, doc, o.json, started);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
