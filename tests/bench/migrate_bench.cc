// migrate_bench: compute migration of a booted, idle guest between two
// compute pods (vmpod: its RAM stays in the memory pods, only QEMU's device
// state moves) against QEMU's own precopy migration of the same guest
// between two QEMUs on this machine (RAM copied over a unix socket, the
// bandwidth cap lifted), for each --sizes guest RAM size.
//   vmpod: the vmm's report: total, and downtime from the source's pause to
//     the destination's resume (the RAM write-back is inside it).
//   qemu: QEMU's own total-time and downtime from query-migrate.
// Both guests first fill half their RAM with a pattern and keep it, so
// precopy has the RAM of a guest that has used it to send.
// The guest moves back and forth; each pass is one move, alternating vmpod
// and qemu (then qemu and vmpod), one warm-up pair first
// (shared/BENCHMARKS.md). The goal: flat in RAM size and at least
// 5x faster than precopy at 2 GiB.
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

struct Options {
  unsigned pairs = 5;
  unsigned warmup = 1;
  bool quick = false;
  std::optional<std::string> json;
  std::string dir;
  std::vector<std::string> sizes{"256M", "2G"};
  bool verbose = false;
};

Status wait_booted(const std::string& agent_socket) {
  auto agent = cpuserver::GuestAgent::connect(agent_socket, bench::kBootTimeout);
  if (!agent) return fail(agent.error().context("guest agent"));
  return {};
}

// A guest on plain QEMU RAM that moves between two QEMUs with QEMU's own
// migration: each move starts a fresh incoming QEMU and ends the old one.
class PlainGuest {
 public:
  static Result<std::unique_ptr<PlainGuest>> boot(const cpuserver::GuestSpec& spec, const std::string& dir) {
    std::unique_ptr<PlainGuest> guest(new PlainGuest(spec, dir));
    auto qemu = guest->start(false);
    if (!qemu) return fail(qemu.error());
    guest->current_ = std::move(*qemu);
    VMPOD_TRY_CTX(wait_booted(guest->current_->paths().agent_socket), "plain guest");
    return guest;
  }

  Result<cpuserver::QemuProcess::MigrationTimes> move() {
    auto next = start(true);
    if (!next) return fail(next.error());
    const std::string socket = run_dir(generation_) + "/migration.sock";
    VMPOD_TRY_CTX((*next)->migrate_in("unix:" + socket, /*ram_shared=*/false), "incoming");
    VMPOD_TRY_CTX(current_->migrate_out("unix:" + socket, /*ram_shared=*/false), "outgoing");
    auto times = current_->wait_for_migration(kMigrationTimeout);
    if (!times) return fail(times.error());
    auto arrived = (*next)->wait_for_migration(kMigrationTimeout);
    if (!arrived) return fail(arrived.error());
    VMPOD_TRY_CTX((*next)->resume(), "destination");
    (void)current_->shutdown(std::chrono::seconds(3));
    current_ = std::move(*next);
    return times;
  }

  std::string agent_socket() const { return current_->paths().agent_socket; }

 private:
  PlainGuest(cpuserver::GuestSpec spec, std::string dir) : spec_(std::move(spec)), dir_(std::move(dir)) {}

  std::string run_dir(unsigned generation) const { return dir_ + "/plain-" + std::to_string(generation % 2); }

  Result<std::unique_ptr<cpuserver::QemuProcess>> start(bool incoming) {
    ++generation_;
    cpuserver::QemuConfig config;
    config.guest = spec_;
    config.run_dir = run_dir(generation_);
    config.incoming = incoming;
    std::error_code ec;
    std::filesystem::create_directories(config.run_dir, ec);
    return cpuserver::QemuProcess::start(config);
  }

  cpuserver::GuestSpec spec_;
  std::string dir_;
  unsigned generation_ = 0;
  std::unique_ptr<cpuserver::QemuProcess> current_;
};

struct SizeResult {
  uint64_t bytes = 0;
  Figure total;
  Figure downtime;
};

Result<SizeResult> measure(const Options& o, uint64_t memory) {
  SizeResult result{memory,
                    {"migrate.total_ms." + bench::size_label(memory), "vmpod", "qemu", {}, {}},
                    {"migrate.downtime_ms." + bench::size_label(memory), "vmpod", "qemu", {}, {}}};
  const std::string dir = o.dir + "/" + bench::size_label(memory);
  vmm::LocalClusterConfig config;
  config.vmpod_binary = bench::vmpod_binary();
  config.dir = dir + "/cluster";
  config.memory_pods = 2;
  config.compute_pods = 2;
  config.memory_pod_capacity = memory;
  config.verbose = o.verbose;
  std::fprintf(stderr, "migrate_bench: %s: starting a cluster with two compute pods, booting both guests\n",
               bench::size_label(memory).c_str());
  auto cluster = vmm::LocalCluster::start(config);
  if (!cluster) return fail(cluster.error());
  auto vmm = vmm::VmmClient::connect((*cluster)->vmm_address(), std::chrono::seconds(5));
  if (!vmm) return fail(vmm.error());
  vmm::VmRequest request;
  request.guest = bench::guest_spec("moving", memory);
  auto vm = (*vmm)->create_vm(request);
  if (!vm) return fail(vm.error());
  VMPOD_TRY_CTX(bench::fill_half(vm->runtime.paths.agent_socket, memory), "vmpod guest");
  std::string where = vm->compute_pod;
  auto plain = PlainGuest::boot(bench::guest_spec("moving", memory), dir);
  if (!plain) return fail(plain.error());
  VMPOD_TRY_CTX(bench::fill_half((*plain)->agent_socket(), memory), "plain guest");

  const unsigned rounds = o.warmup + o.pairs;
  for (unsigned round = 0; round < rounds && !bench::stop_requested(); ++round) {
    const bool measured = round >= o.warmup;
    const bool vmpod_first = round % 2 == 0;
    for (int turn = 0; turn < 2 && !bench::stop_requested(); ++turn) {
      const bool vmpod_turn = (turn == 0) == vmpod_first;
      double total_ms = 0, downtime_ms = 0;
      if (vmpod_turn) {
        const std::string to = where == "cpu0" ? "cpu1" : "cpu0";
        auto moved = (*vmm)->migrate_vm("moving", to);
        if (!moved) return fail(moved.error());
        where = to;
        total_ms = static_cast<double>(moved->total.count()) / 1000.0;
        downtime_ms = static_cast<double>(moved->downtime.count()) / 1000.0;
      } else {
        auto times = (*plain)->move();
        if (!times) return fail(times.error());
        total_ms = times->total_ms;
        downtime_ms = times->downtime_ms;
      }
      std::fprintf(stderr, "migrate_bench: %s pair %u/%u%s: %-5s total %.1f ms downtime %.1f ms\n",
                   bench::size_label(memory).c_str(), round + 1, rounds, measured ? "" : " (warm-up)",
                   vmpod_turn ? "vmpod" : "qemu", total_ms, downtime_ms);
      if (!measured) continue;
      (vmpod_turn ? result.total.subject : result.total.baseline).push_back(total_ms);
      (vmpod_turn ? result.downtime.subject : result.downtime.baseline).push_back(downtime_ms);
    }
  }
  return result;
}

int run(int argc, char** argv) {
  bench::install_stop_signals();
  Options o;
  CLI::App app{"Compute migration: vmpod (device state only) vs QEMU precopy (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "256M only, 1 pair, no warm-up: checks that it runs",
                            .pairs = "measured pairs per size",
                            .warmup = "warm-up pairs per size",
                            .dir = "sockets and logs (default: a fresh /tmp directory, removed after)"});
  app.add_option("--sizes", o.sizes, "guest RAM sizes")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.apply();
  if (o.quick) {
    o.sizes = {"256M"};
  }
  std::vector<uint64_t> sizes;
  for (const auto& text : o.sizes) {
    auto size = parse_size(text);
    if (!size) {
      std::fprintf(stderr, "migrate_bench: --sizes %s: %s\n", text.c_str(), size.error().to_string().c_str());
      return 2;
    }
    sizes.push_back(*size);
  }
  for (const auto& file : {bench::guest_image_file("vmlinux"), bench::vmpod_binary()}) {
    if (!std::filesystem::exists(file)) {
      std::fprintf(stderr, "migrate_bench: %s does not exist (build the guest image and vmpod)\n", file.c_str());
      return 2;
    }
  }
  const bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-migrate-{}", ::getpid());
  const auto started = std::chrono::steady_clock::now();
  const std::string load_at_start = bench::load_average();

  std::string failure;
  std::vector<SizeResult> results;
  for (uint64_t size : sizes) {
    if (bench::stop_requested()) break;
    auto result = measure(o, size);
    if (!result) {
      failure = result.error().to_string();
      break;
    }
    results.push_back(std::move(*result));
  }
  nlohmann::json doc;
  if (failure.empty() && !bench::stop_requested()) {
    std::printf("# migrate_bench pairs=%u warmup=%u accel=tcg memory_pods=2 provider=tcp loadavg=%s..%s cpus=%u\n",
                o.pairs, o.warmup, load_at_start.c_str(), bench::load_average().c_str(),
                std::thread::hardware_concurrency());
    std::printf("# values: median of moves in ms; ratio: median of per-pair vmpod/qemu (lower is better); "
                "vmpod downtime = its total\n");
    doc["bench"] = "migrate";
    doc["figures"] = nlohmann::json::array();
    doc["goals"] = nlohmann::json::array();
    for (const auto& result : results) {
      std::printf("%s\n%s\n", result.total.line().c_str(), result.downtime.line().c_str());
      doc["figures"].push_back(result.total.to_json());
      doc["figures"].push_back(result.downtime.to_json());
    }
    const SizeResult& largest = results.back();
    Goal faster{largest.total.name, "ratio", true, 0.2, bench::summarize(largest.total.ratios()).median,
                "at least 5x faster than precopy at the largest size"};
    std::printf("%s\n", faster.line().c_str());
    doc["goals"].push_back(faster.to_json());
    if (results.size() > 1) {
      const double small = bench::summarize(results.front().total.subject).median;
      const double large = bench::summarize(largest.total.subject).median;
      Goal flat{largest.total.name, "vmpod_vs_smallest", true, 1.2, large / small,
                "vmpod's median total at the largest size over the smallest: flat in RAM size"};
      std::printf("%s\n", flat.line().c_str());
      doc["goals"].push_back(flat.to_json());
    }
    std::fflush(stdout);
    doc["config"] = {{"sizes", o.sizes}, {"pairs", o.pairs}, {"warmup", o.warmup}, {"quick", o.quick}};
    doc["loadavg"] = {load_at_start, bench::load_average()};
  }
  return bench::finish("migrate_bench", o.dir, own_dir, failure, doc, o.json, started);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
