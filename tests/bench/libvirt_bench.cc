// libvirt_bench: starting a libvirt domain whose RAM is in memory pods (file
// memory backing on `vmpod libvirt backing`, placed on 2 memory pods by its
// vmpod element) against the same domain with plain memory, both through
// libvirt's own QEMU driver on one LibvirtHost (real virtlogd and libvirtd).
// Each start is timed twice: `virsh start` alone (libvirt's work: the hook,
// the directory on podfs, QEMU up and resumed), and from `virsh start` to
// the guest's agent answering (the guest's boot, its RAM faulted in from
// the pods or from anonymous memory). The domain is destroyed between
// starts. Runs alternate pods and plain (then plain and pods), one warm-up
// pair first (shared/BENCHMARKS.md).
#include <unistd.h>

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
#include <vmpod/vmm/local_cluster.h>

#include "bench_common.h"
#include "bench_flags.h"
#include "libvirt_host.h"

namespace {

using namespace vmpod;
using bench::Figure;

constexpr const char* kPodsDomain = "vmpod-bench-pods";
constexpr const char* kPlainDomain = "vmpod-bench-plain";
constexpr auto kBootTimeout = std::chrono::seconds(180);

struct Options {
  unsigned pairs = 5;
  unsigned warmup = 1;
  bool quick = false;
  std::optional<std::string> json;
  std::string dir;
  bool verbose = false;
};

struct StartTimes {
  double virsh_ms = 0;
  double agent_ms = 0;
};

double ms_since(std::chrono::steady_clock::time_point start) { return bench::seconds_since(start) * 1000; }

// Starts the domain, waits for its agent, then destroys it.
Result<StartTimes> time_start(testing::LibvirtHost& host, const std::string& domain) {
  StartTimes times;
  auto start = std::chrono::steady_clock::now();
  auto started = host.virsh("start " + domain);
  if (!started) return fail(started.error());
  times.virsh_ms = ms_since(start);
  auto agent = cpuserver::GuestAgent::connect(host.agent_socket(domain), kBootTimeout);
  if (!agent) return fail(agent.error().context(domain + "'s agent"));
  auto echoed = (*agent)->run("echo ready", std::chrono::seconds(30));
  if (!echoed || echoed->exit_code != 0) {
    return fail(ErrorCode::kInternal, domain + ": the agent did not run `echo ready`");
  }
  times.agent_ms = ms_since(start);
  agent->reset();
  auto destroyed = host.virsh("destroy " + domain);
  if (!destroyed) return fail(destroyed.error());
  return times;
}

// The median of kListCalls `virsh -c URI list --all`: connect,
// authenticate, list, close, as scripts call virsh; through the relay for
// vmpod:///system.
constexpr int kListCalls = 5;
Result<double> time_list(const std::string& uri) {
  std::vector<double> took;
  for (int call = 0; call < kListCalls; ++call) {
    auto start = std::chrono::steady_clock::now();
    auto listed = testing::run_command("virsh -c " + uri + " list --all");
    if (listed.status != 0) return fail(ErrorCode::kInternal, "virsh -c " + uri + " list: " + listed.output);
    took.push_back(ms_since(start));
  }
  return vmpod::percentile(took, 0.5);
}

int run(int argc, char** argv) {
  bench::install_stop_signals();
  Options o;
  CLI::App app{"libvirt domain start, RAM in memory pods vs plain memory, and virsh through "
               "vmpod:///system vs qemu:///system (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "1 pair, no warm-up: checks that it runs",
                            .pairs = "measured pairs",
                            .warmup = "warm-up pairs",
                            .dir = "sockets, logs, the podfs mount (default: a fresh /tmp directory, removed after)"});
  CLI11_PARSE(app, argc, argv);
  flags.apply();
  const std::string image_dir = std::filesystem::path(bench::guest_image_file("vmlinux")).parent_path();
  const bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-libvirt-{}", ::getpid());
  std::error_code ec;
  std::filesystem::create_directories(o.dir, ec);
  const auto started = std::chrono::steady_clock::now();
  const std::string load_at_start = bench::load_average();

  std::string failure;
  std::vector<double> pods_virsh, plain_virsh, pods_agent, plain_agent, relayed_list, direct_list;
  {
    vmm::LocalClusterConfig config;
    config.vmpod_binary = bench::vmpod_binary();
    config.dir = o.dir + "/cluster";
    config.memory_pods = 2;
    config.memory_pod_capacity = 512ull << 20;
    config.verbose = o.verbose;
    std::unique_ptr<vmm::LocalCluster> cluster;
    std::unique_ptr<testing::LibvirtHost> host;
    auto prepare = [&]() -> Status {
      std::fprintf(stderr, "libvirt_bench: starting 2 memory pods, the backing, virtlogd and libvirtd\n");
      auto started_cluster = vmm::LocalCluster::start(config);
      if (!started_cluster) return fail(started_cluster.error());
      cluster = std::move(*started_cluster);
      auto started_host = testing::LibvirtHost::start(
          {o.dir, bench::vmpod_binary(), image_dir, cluster->memory_pod_addresses(), ""});
      if (!started_host) return fail(started_host.error());
      host = std::move(*started_host);
      VMPOD_TRY_CTX(host->define(kPodsDomain, std::string(testing::kFileBacking) + testing::vmpod_element("pods='2'")),
                    "define");
      VMPOD_TRY_CTX(host->define(kPlainDomain, ""), "define");
      return {};
    };
    if (auto ready = prepare(); !ready) failure = ready.error().to_string();
    const unsigned rounds = o.warmup + o.pairs;
    for (unsigned round = 0; failure.empty() && round < rounds && !bench::stop_requested(); ++round) {
      const bool measured = round >= o.warmup;
      const bool pods_first = round % 2 == 0;
      for (int turn = 0; turn < 2 && failure.empty() && !bench::stop_requested(); ++turn) {
        const bool pods_turn = (turn == 0) == pods_first;
        auto times = time_start(*host, pods_turn ? kPodsDomain : kPlainDomain);
        if (!times) {
          failure = times.error().to_string();
          break;
        }
        std::fprintf(stderr, "libvirt_bench: pair %u/%u%s: %-5s virsh start %.0f ms, agent %.0f ms\n", round + 1,
                     rounds, measured ? "" : " (warm-up)", pods_turn ? "pods" : "plain", times->virsh_ms,
                     times->agent_ms);
        if (!measured) continue;
        (pods_turn ? pods_virsh : plain_virsh).push_back(times->virsh_ms);
        (pods_turn ? pods_agent : plain_agent).push_back(times->agent_ms);
      }
      for (int turn = 0; turn < 2 && failure.empty(); ++turn) {
        const bool relayed = (turn == 0) == pods_first;
        auto took = time_list(relayed ? "vmpod:///system" : "qemu:///system");
        if (!took) {
          failure = took.error().to_string();
          break;
        }
        if (measured) (relayed ? relayed_list : direct_list).push_back(*took);
      }
    }
    host.reset();
    cluster.reset();
  }

  Figure virsh_start{"libvirt.virsh_start_ms", "pods", "plain", pods_virsh, plain_virsh};
  Figure to_agent{"libvirt.start_to_agent_ms", "pods", "plain", pods_agent, plain_agent};
  Figure list{"libvirt.virsh_list_ms", "vmpod", "qemu", relayed_list, direct_list};
  nlohmann::json doc;
  if (failure.empty() && !bench::stop_requested()) {
    std::printf("# libvirt_bench memory=256MiB memory_pods=2 provider=tcp pairs=%u warmup=%u accel=tcg "
                "loadavg=%s..%s cpus=%u\n",
                o.pairs, o.warmup, load_at_start.c_str(), bench::load_average().c_str(),
                std::thread::hardware_concurrency());
    std::printf("# values: median over starts, in ms; ratio: median of per-pair pods/plain (lower is better)\n");
    std::printf("%s\n%s\n", virsh_start.line().c_str(), to_agent.line().c_str());
    std::printf("# virsh list --all through vmpod:///system (the relay) vs qemu:///system (libvirtd's socket), "
                "median of %d per pair\n",
                kListCalls);
    std::printf("%s\n", list.line().c_str());
    std::fflush(stdout);
    doc["bench"] = "libvirt";
    doc["config"] = {{"memory", "256MiB"}, {"memory_pods", 2}, {"pairs", o.pairs}, {"warmup", o.warmup},
                     {"quick", o.quick}};
    doc["figures"] = {virsh_start.to_json(), to_agent.to_json(), list.to_json()};
    doc["loadavg"] = {load_at_start, bench::load_average()};
  }
  return bench::finish("libvirt_bench", o.dir, own_dir, failure, doc, o.json, started);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
