// boot_bench: boot time of the guest image with its RAM on memory pods
// (a podfs file, through a LocalCluster: 2 memory pods over tcp, a compute
// pod and a vmm) against QEMU's own anonymous RAM, same kernel, initrd and
// command line. Both are timed to the first `VMPOD-READY` line on the
// guest's serial console (its chardev log, polled every 5 ms):
//   vmpod: from VmmClient::create_vm to the line, then stop_vm;
//   plain: from QemuProcess::start to the line, then shutdown.
// The cluster starts once, outside the timed part. Runs alternate vmpod and
// plain (then plain and vmpod), one warm-up pair first; see
// shared/BENCHMARKS.md.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/base/units.h>
#include <vmpod/cpuserver/qemu.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

#include "bench_common.h"
#include "bench_flags.h"

namespace {

using namespace vmpod;
using bench::Figure;
using bench::Goal;

constexpr const char* kReady = "VMPOD-READY";
constexpr auto kPoll = std::chrono::milliseconds(5);

struct Options {
  unsigned pairs = 5;
  unsigned warmup = 1;
  bool quick = false;
  std::optional<std::string> json;
  std::string kernel;
  std::string initrd;
  std::string append = "console=ttyS0 panic=-1 quiet";
  uint64_t memory = 256ull << 20;
  std::string machine = "q35";
  std::string vmpod_binary;
  std::string dir;
  unsigned timeout_s = 180;
  bool verbose = false;
};

// The defaults of the guest image and binary, and the microvm command line.
Options completed(Options o) {
  if (o.kernel.empty()) o.kernel = bench::guest_image_file("vmlinuz");
  if (o.initrd.empty()) o.initrd = bench::guest_image_file("initramfs.cpio.gz");
  if (o.vmpod_binary.empty()) o.vmpod_binary = bench::vmpod_binary();
  // The guest's machine type needs this on microvm (shared/FACTS.md).
  if (o.machine == "microvm" && o.append.find("tsc_early_khz") == std::string::npos) {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("cpu MHz", 0) == 0) {
        double mhz = std::stod(line.substr(line.find(':') + 1));
        o.append += fmt::format(" tsc_early_khz={}", static_cast<long>(mhz * 1000));
        break;
      }
    }
  }
  return o;
}

// Follows a serial log from its start until `kReady` shows.
class ReadyWatcher {
 public:
  explicit ReadyWatcher(std::string path) : path_(std::move(path)) {}
  bool ready() {
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buffer[65536];
    while (true) {
      ssize_t n = ::pread(fd, buffer, sizeof(buffer), static_cast<off_t>(offset_));
      if (n <= 0) break;
      offset_ += static_cast<uint64_t>(n);
      tail_.append(buffer, static_cast<size_t>(n));
      if (tail_.find(kReady) != std::string::npos) {
        ::close(fd);
        return true;
      }
      if (tail_.size() > 64) tail_.erase(0, tail_.size() - 64);
    }
    ::close(fd);
    return false;
  }

 private:
  std::string path_;
  uint64_t offset_ = 0;
  std::string tail_;
};

std::string log_tail(const std::string& path, size_t bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > bytes) text = text.substr(text.size() - bytes);
  return text;
}

cpuserver::GuestSpec guest_spec(const Options& o) {
  cpuserver::GuestSpec guest;
  guest.name = "bootbench";
  guest.memory_bytes = o.memory;
  guest.cpus = 1;
  guest.machine = o.machine;
  guest.accel = cpuserver::Accel::kTcg;
  guest.kernel = o.kernel;
  guest.initrd = o.initrd;
  guest.append = o.append;
  return guest;
}

struct BootResult {
  double ready_s = 0;   // start call to VMPOD-READY
  double start_s = 0;   // start call returned (QEMU up, QMP answering)
};

struct VmpodTraffic {
  unsigned runs = 0;
  uint64_t reads = 0, bytes_read = 0, zero_reads = 0, writes = 0, bytes_written = 0;
};

Result<BootResult> boot_vmpod(vmm::VmmClient& client, const Options& o, const std::string& cluster_dir,
                              VmpodTraffic* traffic) {
  vmm::VmRequest request;
  request.guest = guest_spec(o);
  request.memory_pod_count = 2;
  request.provider = net::FabricProvider::kTcp;
  // The compute pod's run directory for this guest (LocalCluster: DIR/cpu0):
  // a stale log from the previous run must not count.
  std::string serial_log = cpuserver::QemuPaths::in(cluster_dir + "/cpu0/" + request.guest.name).serial_log;
  ::unlink(serial_log.c_str());

  BootResult result;
  auto start = std::chrono::steady_clock::now();
  auto vm = client.create_vm(request);
  result.start_s = bench::seconds_since(start);
  if (!vm) return fail(vm.error().context("create_vm"));
  serial_log = vm->runtime.paths.serial_log;
  ReadyWatcher watcher(serial_log);
  auto deadline = start + std::chrono::seconds(o.timeout_s);
  auto next_check = start + std::chrono::milliseconds(500);
  Status outcome;
  while (true) {
    if (watcher.ready()) {
      result.ready_s = bench::seconds_since(start);
      break;
    }
    if (bench::stop_requested()) {
      outcome = fail(ErrorCode::kUnavailable, "interrupted");
      break;
    }
    auto now = std::chrono::steady_clock::now();
    if (now > deadline) {
      outcome = fail(ErrorCode::kUnavailable,
                     fmt::format("vmpod guest not ready after {} s; console tail: {}", o.timeout_s,
                                 log_tail(serial_log, 300)));
      break;
    }
    if (now > next_check) {
      next_check = now + std::chrono::milliseconds(500);
      auto state = client.vm(request.guest.name);
      if (state && state->state != vmm::VmState::kRunning && state->state != vmm::VmState::kStarting) {
        outcome = fail(ErrorCode::kInternal, fmt::format("vmpod guest {}: {}; console tail: {}",
                                                         vmm::vm_state_name(state->state), state->reason,
                                                         log_tail(serial_log, 300)));
        break;
      }
    }
    std::this_thread::sleep_for(kPoll);
  }
  if (outcome && traffic) {
    auto stats = client.vm_stats(request.guest.name);
    if (stats) {
      ++traffic->runs;
      traffic->reads += stats->podfs.reads;
      traffic->bytes_read += stats->podfs.bytes_read;
      traffic->zero_reads += stats->podfs.zero_reads;
      traffic->writes += stats->podfs.writes;
      traffic->bytes_written += stats->podfs.bytes_written;
    }
  }
  auto stopped = client.stop_vm(request.guest.name);
  if (!outcome) return fail(outcome.error());
  if (!stopped) return fail(stopped.error().context("stop_vm"));
  return result;
}

Result<BootResult> boot_plain(const Options& o, const std::string& run_dir) {
  cpuserver::QemuConfig config;
  config.guest = guest_spec(o);
  config.run_dir = run_dir;  // mem_path stays empty: QEMU's own RAM
  std::string serial_log = cpuserver::QemuPaths::in(run_dir).serial_log;
  ::unlink(serial_log.c_str());

  BootResult result;
  auto start = std::chrono::steady_clock::now();
  auto qemu = cpuserver::QemuProcess::start(config);
  result.start_s = bench::seconds_since(start);
  if (!qemu) return fail(qemu.error().context("plain qemu"));
  ReadyWatcher watcher(serial_log);
  auto deadline = start + std::chrono::seconds(o.timeout_s);
  Status outcome;
  while (true) {
    if (watcher.ready()) {
      result.ready_s = bench::seconds_since(start);
      break;
    }
    if (bench::stop_requested()) {
      outcome = fail(ErrorCode::kUnavailable, "interrupted");
      break;
    }
    if (!(*qemu)->running()) {
      outcome = fail(ErrorCode::kInternal, "plain qemu ended: " + (*qemu)->exit_reason());
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      outcome = fail(ErrorCode::kUnavailable, fmt::format("plain guest not ready after {} s; console tail: {}",
                                                          o.timeout_s, log_tail(serial_log, 300)));
      break;
    }
    std::this_thread::sleep_for(kPoll);
  }
  (void)(*qemu)->shutdown(std::chrono::seconds(3));
  if (!outcome) return fail(outcome.error());
  return result;
}

int run(int argc, char** argv) {
  bench::install_stop_signals();
  Options o;
  std::string memory = "256M";
  CLI::App app{"Boot to VMPOD-READY with RAM on memory pods vs plain QEMU RAM (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "1 pair, no warm-up: checks that it runs",
                            .pairs = "measured pairs",
                            .warmup = "warm-up pairs",
                            .dir = "sockets and logs (default: a fresh /tmp directory, removed after)"});
  app.add_option("--kernel", o.kernel, "guest kernel (default: the guest image's)");
  app.add_option("--initrd", o.initrd, "guest initramfs (default: the guest image's)");
  app.add_option("--memory", memory, "guest RAM")->capture_default_str();
  app.add_option("--machine", o.machine, "QEMU machine")->capture_default_str()->check(CLI::IsMember({"q35", "microvm"}));
  app.add_option("--timeout", o.timeout_s, "seconds to wait for each boot")->capture_default_str();
  app.add_option("--vmpod", o.vmpod_binary, "the vmpod binary (default: the build's)");
  CLI11_PARSE(app, argc, argv);
  flags.apply();
  auto memory_bytes = parse_size(memory);
  if (!memory_bytes) {
    std::fprintf(stderr, "boot_bench: --memory: %s\n", memory_bytes.error().to_string().c_str());
    return 2;
  }
  o.memory = *memory_bytes;
  o = completed(std::move(o));
  for (const auto& file : {o.kernel, o.initrd, o.vmpod_binary}) {
    if (!std::filesystem::exists(file)) {
      std::fprintf(stderr, "boot_bench: %s does not exist (build the guest image and vmpod; "
                           "VMPOD_IMAGE_DIR, VMPOD_BINARY, --kernel, --initrd, --vmpod)\n", file.c_str());
      return 2;
    }
  }
  bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-boot-{}", ::getpid());
  std::error_code ec;
  std::string cluster_dir = o.dir + "/cluster";
  std::string plain_dir = o.dir + "/plain";
  std::filesystem::create_directories(plain_dir, ec);
  auto started = std::chrono::steady_clock::now();
  std::string load_at_start = bench::load_average();

  std::string failure;
  std::vector<double> vmpod_ready, plain_ready, vmpod_start, plain_start;
  VmpodTraffic traffic;
  double cluster_s = 0;
  {
    std::fprintf(stderr, "boot_bench: starting the cluster (2 memory pods over tcp, a compute pod, a vmm)\n");
    vmm::LocalClusterConfig config;
    config.vmpod_binary = o.vmpod_binary;
    config.dir = cluster_dir;
    config.memory_pods = 2;
    config.memory_pod_capacity = std::max<uint64_t>(o.memory, 1ull << 30);
    config.provider = net::FabricProvider::kTcp;
    config.verbose = o.verbose;
    auto cluster_start = std::chrono::steady_clock::now();
    auto cluster = vmm::LocalCluster::start(config);
    cluster_s = bench::seconds_since(cluster_start);
    std::unique_ptr<vmm::VmmClient> client;
    if (!cluster) {
      failure = "cluster: " + cluster.error().to_string();
    } else {
      auto connected = vmm::VmmClient::connect((*cluster)->vmm_address(), std::chrono::seconds(5));
      if (!connected) failure = "vmm: " + connected.error().to_string();
      else client = std::move(*connected);
    }
    unsigned rounds = o.warmup + o.pairs;
    for (unsigned round = 0; failure.empty() && round < rounds && !bench::stop_requested(); ++round) {
      bool measured = round >= o.warmup;
      // A B, then B A: drift over the run does not favour one side.
      bool vmpod_first = round % 2 == 0;
      for (int turn = 0; turn < 2 && failure.empty() && !bench::stop_requested(); ++turn) {
        bool vmpod_turn = (turn == 0) == vmpod_first;
        std::fprintf(stderr, "boot_bench: pair %u/%u%s: %s\n", round + 1, rounds, measured ? "" : " (warm-up)",
                     vmpod_turn ? "vmpod" : "plain");
        auto boot = vmpod_turn ? boot_vmpod(*client, o, cluster_dir, measured ? &traffic : nullptr)
                               : boot_plain(o, plain_dir);
        if (!boot) {
          if (!bench::stop_requested()) failure = boot.error().to_string();
          break;
        }
        std::fprintf(stderr, "boot_bench:   ready in %.2f s (start call %.3f s)\n", boot->ready_s, boot->start_s);
        if (!measured) continue;
        (vmpod_turn ? vmpod_ready : plain_ready).push_back(boot->ready_s);
        (vmpod_turn ? vmpod_start : plain_start).push_back(boot->start_s);
      }
    }
    // The vmm stops its VMs, the compute pod unmounts, then the memory pods stop.
    client.reset();
    if (cluster) cluster->reset();
  }

  Figure ready{"boot.ready_s", "vmpod", "plain", vmpod_ready, plain_ready};
  Figure start{"boot.start_s", "vmpod", "plain", vmpod_start, plain_start};
  bool complete = failure.empty() && !bench::stop_requested();
  nlohmann::json doc;
  if (complete) {
    Goal goal{ready.name, "ratio", true, 1.10, bench::summarize(ready.ratios()).median,
              "median of per-pair vmpod/plain"};
    std::printf("# boot_bench kernel=%s initrd=%s memory=%s machine=%s accel=tcg pairs=%u warmup=%u"
                " append=\"%s\" loadavg=%s..%s cpus=%u\n",
                o.kernel.c_str(), o.initrd.c_str(), format_bytes(o.memory).c_str(), o.machine.c_str(), o.pairs,
                o.warmup, o.append.c_str(), load_at_start.c_str(), bench::load_average().c_str(),
                std::thread::hardware_concurrency());
    std::printf("# values: median of runs in seconds; ratio: median of per-pair vmpod/plain (lower is better);"
                " cluster start (untimed) took %.2f s\n", cluster_s);
    std::printf("%s\n", ready.line().c_str());
    std::printf("%s\n", start.line().c_str());
    std::printf("%s\n", goal.line().c_str());
    if (traffic.runs > 0) {
      std::printf("# detail vmpod podfs traffic per boot (to VMPOD-READY): READs=%.0f (%s, %.0f answered with zeros)"
                  " WRITEs=%.0f (%s)\n",
                  static_cast<double>(traffic.reads) / traffic.runs,
                  format_bytes(traffic.bytes_read / traffic.runs).c_str(),
                  static_cast<double>(traffic.zero_reads) / traffic.runs,
                  static_cast<double>(traffic.writes) / traffic.runs,
                  format_bytes(traffic.bytes_written / traffic.runs).c_str());
    }
    std::fflush(stdout);
    doc["bench"] = "boot";
    doc["config"] = {{"kernel", o.kernel}, {"initrd", o.initrd},   {"memory_bytes", o.memory},
                     {"machine", o.machine}, {"append", o.append}, {"pairs", o.pairs},
                     {"warmup", o.warmup},   {"quick", o.quick},   {"memory_pods", 2},
                     {"provider", "tcp"}};
    doc["figures"] = {ready.to_json(), start.to_json()};
    doc["goals"] = {goal.to_json()};
    doc["cluster_start_s"] = cluster_s;
    doc["loadavg"] = {load_at_start, bench::load_average()};
    if (traffic.runs > 0) {
      doc["details"]["vmpod_podfs_per_boot"] = {
          {"reads", traffic.reads / traffic.runs},
          {"bytes_read", traffic.bytes_read / traffic.runs},
          {"zero_reads", traffic.zero_reads / traffic.runs},
          {"writes", traffic.writes / traffic.runs},
          {"bytes_written", traffic.bytes_written / traffic.runs}};
    }
  }

  return bench::finish("boot_bench", o.dir, own_dir, failure, doc, o.json, started);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
