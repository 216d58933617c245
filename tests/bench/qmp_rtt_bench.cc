// qmp_rtt_bench: the round trip of `query-status` through a vmpod VM's QMP
// endpoint (client -> vmm endpoint -> the VM's QEMU -> back) against the
// same command sent straight to a QEMU's own monitor socket. Both QEMUs run
// the same guest image under TCG, booted and idle; the plain one has its
// RAM in QEMU, the vmpod one on 2 memory pods (tcp) through a LocalCluster.
// Each pass times `--samples` commands one after another on one client;
// passes alternate endpoint and QEMU (then QEMU and endpoint), one warm-up
// pair first (shared/BENCHMARKS.md). The goal: the endpoint adds
// under 50 us at p50, i.e. the median over pairs of
// (endpoint p50 - QEMU p50) < 50 us.
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

#include <vmpod/base/histogram.h>
#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/cpuserver/qemu.h>
#include <vmpod/qmp/qmp_client.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

#include "bench_common.h"
#include "bench_flags.h"

namespace {

using namespace vmpod;
using bench::Figure;
using bench::Goal;

constexpr double kAddedGoalUs = 50;
constexpr auto kBootTimeout = std::chrono::seconds(180);

struct Options {
  unsigned pairs = 5;
  unsigned warmup = 1;
  unsigned samples = 2000;
  bool quick = false;
  std::optional<std::string> json;
  std::string dir;
  bool verbose = false;
};

struct Pass {
  double p50_us = 0;
  double p99_us = 0;
};

cpuserver::GuestSpec guest_spec() {
  cpuserver::GuestSpec guest;
  guest.name = "rtt";
  guest.memory_bytes = 256ull << 20;
  guest.accel = cpuserver::Accel::kTcg;
  guest.kernel = bench::guest_image_file("vmlinux");
  guest.initrd = bench::guest_image_file("initramfs.cpio.gz");
  guest.append = cpuserver::kGuestImageAppend;
  return guest;
}

// Booted means its agent answers: from then on the guest idles and its
// vCPU does not compete with the measurement.
Status wait_booted(const std::string& agent_socket) {
  auto agent = cpuserver::GuestAgent::connect(agent_socket, kBootTimeout);
  if (!agent) return fail(agent.error().context("guest agent"));
  return {};
}

Result<Pass> time_pass(qmp::QmpClient& client, unsigned samples) {
  std::vector<double> micros;
  micros.reserve(samples);
  for (unsigned i = 0; i < samples && !bench::stop_requested(); ++i) {
    auto start = std::chrono::steady_clock::now();
    auto status = client.execute("query-status");
    auto elapsed = std::chrono::steady_clock::now() - start;
    if (!status) return fail(status.error().context("query-status"));
    micros.push_back(std::chrono::duration<double, std::micro>(elapsed).count());
  }
  return Pass{vmpod::percentile(micros, 0.5), vmpod::percentile(micros, 0.99)};
}

int run(int argc, char** argv) {
  bench::install_stop_signals();
  Options o;
  CLI::App app{"QMP round trip of query-status: vmpod endpoint vs QEMU's own socket (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "1 pair of 300 samples, no warm-up: checks that it runs",
                            .pairs = "measured pairs",
                            .warmup = "warm-up pairs",
                            .dir = "sockets and logs (default: a fresh /tmp directory, removed after)"});
  app.add_option("--samples", o.samples, "commands per pass")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.apply();
  if (o.quick) {
    o.samples = 300;
  }
  const cpuserver::GuestSpec guest = guest_spec();
  for (const auto& file : {guest.kernel, guest.initrd, bench::vmpod_binary()}) {
    if (!std::filesystem::exists(file)) {
      std::fprintf(stderr, "qmp_rtt_bench: %s does not exist (build the guest image and vmpod; "
                           "VMPOD_IMAGE_DIR, VMPOD_BINARY)\n", file.c_str());
      return 2;
    }
  }
  const bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-qmp-{}", ::getpid());
  std::error_code ec;
  std::filesystem::create_directories(o.dir + "/plain", ec);
  const auto started = std::chrono::steady_clock::now();
  const std::string load_at_start = bench::load_average();

  std::string failure;
  std::vector<double> endpoint_p50, qemu_p50, endpoint_p99, qemu_p99;
  {
    vmm::LocalClusterConfig config;
    config.vmpod_binary = bench::vmpod_binary();
    config.dir = o.dir + "/cluster";
    config.memory_pods = 2;
    config.memory_pod_capacity = guest.memory_bytes;
    config.verbose = o.verbose;
    std::unique_ptr<vmm::LocalCluster> cluster;
    std::unique_ptr<vmm::VmmClient> vmm;
    std::unique_ptr<cpuserver::QemuProcess> plain;
    std::unique_ptr<qmp::QmpClient> endpoint, qemu;
    auto prepare = [&]() -> Status {
      std::fprintf(stderr, "qmp_rtt_bench: starting a cluster and booting the vmpod guest and the plain one\n");
      auto started_cluster = vmm::LocalCluster::start(config);
      if (!started_cluster) return fail(started_cluster.error());
      cluster = std::move(*started_cluster);
      auto connected = vmm::VmmClient::connect(cluster->vmm_address(), std::chrono::seconds(5));
      if (!connected) return fail(connected.error());
      vmm = std::move(*connected);
      vmm::VmRequest request;
      request.guest = guest;
      auto vm = vmm->create_vm(request);
      if (!vm) return fail(vm.error());
      VMPOD_TRY_CTX(wait_booted(vm->runtime.paths.agent_socket), "vmpod guest");
      cpuserver::QemuConfig plain_config;
      plain_config.guest = guest;
      plain_config.run_dir = o.dir + "/plain";
      auto started_plain = cpuserver::QemuProcess::start(plain_config);
      if (!started_plain) return fail(started_plain.error());
      plain = std::move(*started_plain);
      VMPOD_TRY_CTX(wait_booted(plain->paths().agent_socket), "plain guest");
      auto to_endpoint = qmp::QmpClient::connect(
          {net::SocketAddress::Kind::kUnix, vm->qmp_endpoint, "", 0}, std::chrono::seconds(5));
      if (!to_endpoint) return fail(to_endpoint.error().context("endpoint"));
      endpoint = std::move(*to_endpoint);
      // QEMU's second monitor: the plain QEMU's own socket, nothing between.
      auto to_qemu = qmp::QmpClient::connect(
          {net::SocketAddress::Kind::kUnix, plain->paths().vmm_qmp_socket, "", 0}, std::chrono::seconds(5));
      if (!to_qemu) return fail(to_qemu.error().context("qemu"));
      qemu = std::move(*to_qemu);
      return {};
    };
    if (auto ready = prepare(); !ready) failure = ready.error().to_string();
    const unsigned rounds = o.warmup + o.pairs;
    for (unsigned round = 0; failure.empty() && round < rounds && !bench::stop_requested(); ++round) {
      const bool measured = round >= o.warmup;
      const bool endpoint_first = round % 2 == 0;
      for (int turn = 0; turn < 2 && failure.empty() && !bench::stop_requested(); ++turn) {
        const bool endpoint_turn = (turn == 0) == endpoint_first;
        auto pass = time_pass(endpoint_turn ? *endpoint : *qemu, o.samples);
        if (!pass) {
          failure = pass.error().to_string();
          break;
        }
        std::fprintf(stderr, "qmp_rtt_bench: pair %u/%u%s: %-8s p50 %.1f us p99 %.1f us\n", round + 1, rounds,
                     measured ? "" : " (warm-up)", endpoint_turn ? "endpoint" : "qemu", pass->p50_us, pass->p99_us);
        if (!measured) continue;
        (endpoint_turn ? endpoint_p50 : qemu_p50).push_back(pass->p50_us);
        (endpoint_turn ? endpoint_p99 : qemu_p99).push_back(pass->p99_us);
      }
    }
    endpoint.reset();
    qemu.reset();
    plain.reset();
    vmm.reset();
    cluster.reset();
  }

  Figure p50{"qmp.query_status.p50_us", "endpoint", "qemu", endpoint_p50, qemu_p50};
  Figure p99{"qmp.query_status.p99_us", "endpoint", "qemu", endpoint_p99, qemu_p99};
  nlohmann::json doc;
  if (failure.empty() && !bench::stop_requested()) {
    std::vector<double> added;
    for (size_t i = 0; i < endpoint_p50.size(); ++i) added.push_back(endpoint_p50[i] - qemu_p50[i]);
    Goal goal{p50.name, "added_us", true, kAddedGoalUs, bench::summarize(added).median,
              "median of per-pair endpoint p50 - qemu p50"};
    std::printf("# qmp_rtt_bench command=query-status samples=%u pairs=%u warmup=%u accel=tcg loadavg=%s..%s cpus=%u\n",
                o.samples, o.pairs, o.warmup, load_at_start.c_str(), bench::load_average().c_str(),
                std::thread::hardware_concurrency());
    std::printf("# values: median over passes of each pass's percentile, in us; ratio: median of per-pair "
                "endpoint/qemu (lower is better)\n");
    std::printf("%s\n%s\n%s\n", p50.line().c_str(), p99.line().c_str(), goal.line().c_str());
    std::fflush(stdout);
    doc["bench"] = "qmp_rtt";
    doc["config"] = {{"command", "query-status"}, {"samples", o.samples}, {"pairs", o.pairs},
                     {"warmup", o.warmup},        {"quick", o.quick}};
    doc["figures"] = {p50.to_json(), p99.to_json()};
    doc["goals"] = {goal.to_json()};
    doc["loadavg"] = {load_at_start, bench::load_average()};
  }
  return bench::finish("qmp_rtt_bench", o.dir, own_dir, failure, doc, o.json, started);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
