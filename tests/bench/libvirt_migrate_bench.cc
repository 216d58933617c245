// libvirt_migrate_bench: `virsh migrate --live` of a 2 GiB guest between
// two libvirt hosts on this machine (LibvirtHost: the second in a mount
// namespace of its own, both on the same 2 memory pods), with its RAM in
// memory pods (vmpod moves the devices only) against the same guest with
// plain memory (libvirt 9.0 copies every page). Before its first move each
// guest writes --touch-mib of its RAM (vmpod-memcheck), so that libvirt has
// real pages to copy and vmpod real dirty pages to write back. Each pair
// moves both guests one way (alternating which goes first), the next pair
// moves them back (shared/BENCHMARKS.md).
//
// Figures per move: the total (virsh migrate, start to end), the downtime
// (the longest stretch in which neither host's libvirtd reported the domain
// running, sampled every 5 ms through libvirt's API: the time the guest's
// vCPUs did not run, whoever paused them), and the RAM the stream carried
// (the destination's `virsh domjobinfo --completed`).
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <unistd.h>

#include <atomic>
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

#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/vmm/local_cluster.h>

#include "bench_common.h"
#include "bench_flags.h"
#include "libvirt_host.h"

namespace {

using namespace vmpod;
using bench::Figure;

constexpr const char* kPodsDomain = "vmpod-bench-move-pods";
constexpr const char* kPlainDomain = "vmpod-bench-move-plain";
constexpr auto kBootTimeout = std::chrono::seconds(180);
constexpr auto kSampleEvery = std::chrono::milliseconds(5);

struct Options {
  unsigned pairs = 3;
  unsigned warmup = 1;
  unsigned memory_mib = 2048;
  unsigned touch_mib = 1024;
  bool quick = false;
  std::optional<std::string> json;
  std::string dir;
  bool verbose = false;
};

struct Move {
  double total_ms = 0;
  double downtime_ms = 0;
  double carried_mib = 0;
};

// Whether the domain runs on one host, asked through libvirt's API.
class StateProbe {
 public:
  static Result<std::unique_ptr<StateProbe>> open(const std::string& uri, const std::string& domain) {
    std::unique_ptr<StateProbe> probe(new StateProbe(domain));
    probe->connection_ = virConnectOpen(uri.c_str());
    if (probe->connection_ == nullptr) return fail(ErrorCode::kUnavailable, "cannot connect to " + uri);
    return probe;
  }
  ~StateProbe() {
    if (connection_ != nullptr) virConnectClose(connection_);
  }
  bool running() const {
    virDomainPtr domain = virDomainLookupByName(connection_, domain_.c_str());
    if (domain == nullptr) return false;
    int state = VIR_DOMAIN_NOSTATE;
    bool runs = virDomainGetState(domain, &state, nullptr, 0) == 0 && state == VIR_DOMAIN_RUNNING;
    virDomainFree(domain);
    return runs;
  }

 private:
  explicit StateProbe(std::string domain) : domain_(std::move(domain)) {}
  std::string domain_;
  virConnectPtr connection_ = nullptr;
};

// "Memory processed:  184.821 KiB" from the destination's last incoming job.
Result<double> carried_mib(testing::LibvirtHost& destination, const std::string& domain) {
  auto info = destination.virsh("domjobinfo --completed " + domain);
  if (!info) return fail(info.error());
  size_t at = info->find("Memory processed:");
  double value = 0;
  char unit[8] = {};
  if (at == std::string::npos || std::sscanf(info->c_str() + at, "Memory processed: %lf %7s", &value, unit) != 2) {
    return fail(ErrorCode::kInternal, "domjobinfo: " + *info);
  }
  std::string_view u(unit);
  double scale = u == "B" ? 1.0 / 1048576 : u == "KiB" ? 1.0 / 1024 : u == "MiB" ? 1 : u == "GiB" ? 1024 : 0;
  if (scale == 0) return fail(ErrorCode::kInternal, "domjobinfo unit " + std::string(u));
  return value * scale;
}

Result<Move> time_move(testing::LibvirtHost& from, testing::LibvirtHost& to, const std::string& domain, int port) {
  auto on_source = StateProbe::open(from.libvirtd_uri(), domain);
  if (!on_source) return fail(on_source.error());
  auto on_destination = StateProbe::open(to.libvirtd_uri(), domain);
  if (!on_destination) return fail(on_destination.error());
  std::atomic<bool> moving{true};
  double longest_gap_ms = 0;
  std::thread sampler([&] {
    std::optional<std::chrono::steady_clock::time_point> stopped_at;
    while (moving) {
      auto now = std::chrono::steady_clock::now();
      bool runs = (*on_source)->running() || (*on_destination)->running();
      if (!runs && !stopped_at) stopped_at = now;
      if (runs && stopped_at) {
        longest_gap_ms = std::max(longest_gap_ms, bench::seconds_since(*stopped_at) * 1000);
        stopped_at.reset();
      }
      std::this_thread::sleep_for(kSampleEvery);
    }
  });
  auto start = std::chrono::steady_clock::now();
  Status moved = from.migrate(domain, to, port);
  Move move;
  move.total_ms = bench::seconds_since(start) * 1000;
  // The destination resumes the guest at the very end of the move: give
  // the sampler a moment to see it run.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  moving = false;
  sampler.join();
  if (!moved) return fail(moved.error());
  move.downtime_ms = longest_gap_ms;
  auto carried = carried_mib(to, domain);
  if (!carried) return fail(carried.error());
  move.carried_mib = *carried;
  return move;
}

// Starts the domain on `host` and has the guest write `touch_mib` of its RAM.
Status start_and_touch(testing::LibvirtHost& host, const std::string& domain, unsigned touch_mib) {
  auto started = host.virsh("start " + domain);
  if (!started) return fail(started.error());
  auto agent = cpuserver::GuestAgent::connect(host.agent_socket(domain), kBootTimeout);
  if (!agent) return fail(agent.error().context(domain + "'s agent"));
  auto written = (*agent)->run(fmt::format("vmpod-memcheck --size-mib {} --seed 3", touch_mib), std::chrono::seconds(600));
  if (!written || written->exit_code != 0) {
    return fail(ErrorCode::kInternal, domain + ": vmpod-memcheck: " + (written ? written->output : written.error().message()));
  }
  return {};
}

int run(int argc, char** argv) {
  bench::install_stop_signals();
  // The probes look the domain up where it is not yet or no more: not news.
  virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
  Options o;
  CLI::App app{"virsh migrate of a guest with RAM in memory pods vs plain memory (libvirt copies it) between two "
               "libvirt hosts on this machine (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "a 512 MiB guest, 64 MiB touched, 1 pair, no warm-up: checks that it runs",
                            .pairs = "measured pairs (each moves both guests)",
                            .warmup = "warm-up pairs",
                            .dir = "sockets, logs, the podfs mounts (default: a fresh /tmp directory, removed after)"});
  app.add_option("--memory-mib", o.memory_mib, "guest RAM")->capture_default_str();
  app.add_option("--touch-mib", o.touch_mib, "RAM the guest writes before its first move")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  flags.apply();
  if (o.quick) {
    o.memory_mib = 512;
    o.touch_mib = 64;
  }
  const std::string image_dir = std::filesystem::path(bench::guest_image_file("vmlinux")).parent_path();
  const bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-libvirt-migrate-{}", ::getpid());
  std::error_code ec;
  for (const char* host_dir : {"/a", "/b"}) std::filesystem::create_directories(o.dir + host_dir, ec);
  const auto started = std::chrono::steady_clock::now();
  const std::string load_at_start = bench::load_average();

  std::string failure;
  std::vector<double> pods_total, plain_total, pods_down, plain_down, pods_carried, plain_carried;
  {
    vmm::LocalClusterConfig config;
    config.vmpod_binary = bench::vmpod_binary();
    config.dir = o.dir + "/cluster";
    config.memory_pods = 2;
    config.memory_pod_capacity = uint64_t{o.memory_mib} << 20;
    config.verbose = o.verbose;
    std::unique_ptr<vmm::LocalCluster> cluster;
    std::unique_ptr<testing::LibvirtHost> hosts[2];
    auto prepare = [&]() -> Status {
      std::fprintf(stderr, "libvirt_migrate_bench: 2 memory pods, two libvirt hosts, two %u MiB guests\n",
                   o.memory_mib);
      auto started_cluster = vmm::LocalCluster::start(config);
      if (!started_cluster) return fail(started_cluster.error());
      cluster = std::move(*started_cluster);
      const auto& pods = cluster->memory_pod_addresses();
      auto a = testing::LibvirtHost::start({o.dir + "/a", bench::vmpod_binary(), image_dir, pods, ""});
      if (!a) return fail(a.error());
      hosts[0] = std::move(*a);
      auto b = testing::LibvirtHost::start(
          {o.dir + "/b", bench::vmpod_binary(), image_dir, pods, "5a1c0de0-0000-4000-8000-0000000000be"});
      if (!b) return fail(b.error());
      hosts[1] = std::move(*b);
      VMPOD_TRY_CTX(hosts[0]->define(kPodsDomain, std::string(testing::kFileBacking) + testing::vmpod_element("pods='2'"),
                                     o.memory_mib),
                    "define");
      VMPOD_TRY_CTX(hosts[0]->define(kPlainDomain, "", o.memory_mib), "define");
      for (const char* domain : {kPodsDomain, kPlainDomain}) {
        VMPOD_TRY_CTX(start_and_touch(*hosts[0], domain, o.touch_mib), domain);
      }
      return {};
    };
    if (auto ready = prepare(); !ready) failure = ready.error().to_string();
    const unsigned rounds = o.warmup + o.pairs;
    int port = 49400;
    for (unsigned round = 0; failure.empty() && round < rounds && !bench::stop_requested(); ++round) {
      const bool measured = round >= o.warmup;
      const bool pods_first = round % 2 == 0;
      testing::LibvirtHost& from = *hosts[round % 2];
      testing::LibvirtHost& to = *hosts[1 - round % 2];
      for (int turn = 0; turn < 2 && failure.empty() && !bench::stop_requested(); ++turn) {
        const bool pods_turn = (turn == 0) == pods_first;
        auto move = time_move(from, to, pods_turn ? kPodsDomain : kPlainDomain, port++);
        if (!move) {
          failure = move.error().to_string();
          break;
        }
        std::fprintf(stderr, "libvirt_migrate_bench: pair %u/%u%s: %-5s total %.0f ms, downtime %.0f ms, carried %.1f MiB\n",
                     round + 1, rounds, measured ? "" : " (warm-up)", pods_turn ? "pods" : "plain", move->total_ms,
                     move->downtime_ms, move->carried_mib);
        if (!measured) continue;
        (pods_turn ? pods_total : plain_total).push_back(move->total_ms);
        (pods_turn ? pods_down : plain_down).push_back(move->downtime_ms);
        (pods_turn ? pods_carried : plain_carried).push_back(move->carried_mib);
      }
    }
    for (auto& host : hosts) {
      for (const char* domain : {kPodsDomain, kPlainDomain}) {
        if (host) (void)host->virsh(fmt::format("destroy {}", domain));
      }
    }
    hosts[1].reset();
    hosts[0].reset();
    cluster.reset();
  }

  Figure total{"libvirt.migrate_total_ms", "pods", "plain", pods_total, plain_total};
  Figure downtime{"libvirt.migrate_downtime_ms", "pods", "plain", pods_down, plain_down};
  Figure carried{"libvirt.migrate_carried_mib", "pods", "plain", pods_carried, plain_carried};
  nlohmann::json doc;
  if (failure.empty() && !bench::stop_requested()) {
    std::printf("# libvirt_migrate_bench memory=%uMiB touched=%uMiB memory_pods=2 provider=tcp pairs=%u warmup=%u "
                "accel=tcg loadavg=%s..%s cpus=%u\n",
                o.memory_mib, o.touch_mib, o.pairs, o.warmup, load_at_start.c_str(), bench::load_average().c_str(),
                std::thread::hardware_concurrency());
    std::printf("# values: median over moves; ratio: median of per-pair pods/plain (lower is better)\n");
    std::printf("%s\n%s\n%s\n", total.line().c_str(), downtime.line().c_str(), carried.line().c_str());
    std::fflush(stdout);
    doc["bench"] = "libvirt_migrate";
    doc["config"] = {{"memory_mib", o.memory_mib}, {"touch_mib", o.touch_mib}, {"memory_pods", 2},
                     {"pairs", o.pairs}, {"warmup", o.warmup}, {"quick", o.quick}};
    doc["figures"] = {total.to_json(), downtime.to_json(), carried.to_json()};
    doc["loadavg"] = {load_at_start, bench::load_average()};
  }
  return bench::finish("libvirt_migrate_bench", o.dir, own_dir, failure, doc, o.json, started);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
