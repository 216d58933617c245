// pagein_bench: how fast a page of a podfs file comes in on a page fault.
//
// A file of S bytes on four stores:
//   tmpfs  /dev/shm: the local limit (no FUSE, no network);
//   null   podfs with a null store: the FUSE floor (every READ answered
//          with zeros from memory), the baseline of every ratio;
//   tcp    podfs over 2 memory pods (`vmpod memserver` children), libfabric tcp;
//   shm    the same over libfabric shm.
// The podfs files are filled with non-zero data through pwrite, and their
// cache is dropped before every run so every page comes from the memory
// pods. The toucher is a separate process (this binary re-executed with the
// hidden --touch mode; the podfs file is never mapped in the process that
// serves it): it maps the file MAP_SHARED, marks it MADV_HUGEPAGE as QEMU
// does for guest RAM (--no-hugepage to compare), and times every touch with
// CLOCK_MONOTONIC, one byte per 4 KiB page in order (sequential) or N random
// pages (random). Rounds alternate the stores (tmpfs null tcp shm, then
// reversed), one warm-up round first; see shared/BENCHMARKS.md.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/base/histogram.h>
#include <vmpod/base/subprocess.h>
#include <vmpod/base/units.h>
#include <vmpod/cpuserver/podfs.h>
#include <vmpod/net/socket.h>
#include <vmpod/pods/memory_client.h>

#include "bench_common.h"
#include "bench_flags.h"

namespace {

using namespace vmpod;
using bench::Figure;
using bench::Goal;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kTouchMagic = 0x766d706f64746368ull;  // "vmpodtch"

// Every byte of page p of a filled file holds this value (never zero, so a
// page answered with zeros by mistake shows).
uint8_t pattern_byte(uint64_t page) { return static_cast<uint8_t>(page % 251 + 1); }

// What the toucher writes to its --out file: this header, then `count`
// uint64_t nanosecond samples, then `count` bytes, 1 where the touch was a
// major fault (random mode only).
struct TouchHeader {
  uint64_t magic = kTouchMagic;
  uint64_t count = 0;
  uint64_t total_ns = 0;
  int32_t madvise_result = 0;  // 0 ok, -1 failed, 1 not asked
  int32_t madvise_errno = 0;
  uint64_t mismatches = 0;
  uint64_t first_mismatch_page = 0;
  uint32_t first_mismatch_value = 0;
  uint32_t expected_value = 0;
  uint64_t major_faults = 0;  // of the whole pass (getrusage)
  uint64_t minor_faults = 0;
};

// ---------------------------------------------------------------------------
// The toucher (hidden --touch mode): a fresh process per run.

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

int touch_main(int argc, char** argv) {
  std::string file, mode = "seq", expect = "any", out;
  uint64_t size = 0, pages = 0, seed = 1;
  bool hugepage = true;
  CLI::App app{"pagein_bench's toucher: maps FILE and times its page faults"};
  app.add_option("--touch", file)->required();
  app.add_option("--mode", mode)->check(CLI::IsMember({"seq", "random"}));
  app.add_option("--size", size)->required();
  app.add_option("--pages", pages);
  app.add_option("--seed", seed);
  app.add_option("--hugepage", hugepage);
  app.add_option("--expect", expect);
  app.add_option("--out", out)->required();
  CLI11_PARSE(app, argc, argv);
  if (file.empty() || out.empty() || size < kPage) {
    std::fprintf(stderr, "touch: bad arguments\n");
    return 2;
  }
  int fd = ::open(file.c_str(), O_RDWR);
  if (fd < 0) {
    std::fprintf(stderr, "touch: open %s: %s\n", file.c_str(), std::strerror(errno));
    return 1;
  }
  // Like QEMU's guest RAM: a shared, writable mapping of the whole file.
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    std::fprintf(stderr, "touch: mmap: %s\n", std::strerror(errno));
    return 1;
  }
  TouchHeader header;
  header.madvise_result = 1;
  if (hugepage) {
    header.madvise_result = ::madvise(map, size, MADV_HUGEPAGE) == 0 ? 0 : -1;
    header.madvise_errno = header.madvise_result == 0 ? 0 : errno;
  }
  uint64_t page_count = size / kPage;
  // Everything the timed loop writes is allocated and touched before it.
  std::vector<uint64_t> order;
  if (mode == "seq") {
    order.resize(page_count);
    std::iota(order.begin(), order.end(), 0);
  } else {
    std::vector<uint64_t> all(page_count);
    std::iota(all.begin(), all.end(), 0);
    std::mt19937_64 rng(seed);
    uint64_t n = std::min(pages, page_count);
    for (uint64_t i = 0; i < n; ++i) {
      std::uniform_int_distribution<uint64_t> pick(i, page_count - 1);
      std::swap(all[i], all[pick(rng)]);
    }
    order.assign(all.begin(), all.begin() + static_cast<long>(n));
  }
  std::vector<uint64_t> samples(order.size(), 1);
  std::vector<uint8_t> values(order.size(), 1);
  std::vector<uint8_t> major(order.size(), 0);
  const volatile uint8_t* base = static_cast<const volatile uint8_t*>(map);

  rusage usage_before{}, usage_after{};
  ::getrusage(RUSAGE_THREAD, &usage_before);
  uint64_t start = now_ns();
  if (mode == "seq") {
    // Nothing but the touch and the clock in the loop: the pass's time is
    // the throughput.
    for (size_t i = 0; i < order.size(); ++i) {
      uint64_t t0 = now_ns();
      asm volatile("" ::: "memory");
      values[i] = base[order[i] * kPage];
      asm volatile("" ::: "memory");
      samples[i] = now_ns() - t0;
    }
  } else {
    // Random touches also note, outside the timed part, whether the touch
    // was a major fault: it waited for a READ to reach podfs (or for one
    // already in flight) rather than finding the page cached.
    rusage a{}, b{};
    for (size_t i = 0; i < order.size(); ++i) {
      ::getrusage(RUSAGE_THREAD, &a);
      uint64_t t0 = now_ns();
      asm volatile("" ::: "memory");
      values[i] = base[order[i] * kPage];
      asm volatile("" ::: "memory");
      samples[i] = now_ns() - t0;
      ::getrusage(RUSAGE_THREAD, &b);
      major[i] = b.ru_majflt > a.ru_majflt ? 1 : 0;
    }
  }
  header.total_ns = now_ns() - start;
  ::getrusage(RUSAGE_THREAD, &usage_after);
  header.count = order.size();
  header.major_faults = static_cast<uint64_t>(usage_after.ru_majflt - usage_before.ru_majflt);
  header.minor_faults = static_cast<uint64_t>(usage_after.ru_minflt - usage_before.ru_minflt);

  for (size_t i = 0; i < order.size(); ++i) {
    uint8_t want = expect == "zero" ? 0 : pattern_byte(order[i]);
    if (expect == "any" || values[i] == want) continue;
    if (header.mismatches++ == 0) {
      header.first_mismatch_page = order[i];
      header.first_mismatch_value = values[i];
      header.expected_value = want;
    }
  }
  ::munmap(map, size);
  ::close(fd);

  FILE* f = std::fopen(out.c_str(), "wb");
  if (f == nullptr) return 1;
  bool ok = std::fwrite(&header, sizeof(header), 1, f) == 1 &&
            std::fwrite(samples.data(), sizeof(uint64_t), samples.size(), f) == samples.size() &&
            std::fwrite(major.data(), 1, major.size(), f) == major.size();
  ok = std::fclose(f) == 0 && ok;
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------------------
// The driver.

struct Options {
  uint64_t size = 256ull << 20;
  uint64_t random_pages = 4096;
  uint64_t stripe = cpuserver::PodfsConfig{}.stripe_bytes;
  unsigned pairs = 5;
  unsigned warmup = 1;
  bool hugepage = true;
  bool quick = false;
  std::optional<std::string> json;
  std::vector<std::string> variants = {"tmpfs", "null", "tcp", "shm"};
  std::string vmpod_binary;
  std::string dir;
  bool verbose = false;
  bool probe = true;
};

struct RunResult {
  std::vector<double> latency_us;
  std::vector<double> major_us;  // the touches that were major faults (random)
  double total_s = 0;
  TouchHeader header;
};

// What podfs saw during the measured runs of one store and mode.
struct Detail {
  unsigned runs = 0;
  uint64_t reads = 0, bytes_read = 0, zero_reads = 0, writes = 0, io_errors = 0;
  std::vector<uint64_t> read_latency;      // podfs: READ received to answered
  std::vector<uint64_t> pod_read_latency;  // memory pods: page read handled
  uint64_t mismatches = 0;
  std::string madvise = "not asked";
  std::vector<double> touch_us;  // every touch of every measured run
  std::vector<double> major_us;  // the touches that were major faults
  uint64_t touches = 0, major_faults = 0, minor_faults = 0;

  static void add_latency(std::vector<uint64_t>& into, const std::vector<uint64_t>& before,
                          const std::vector<uint64_t>& after) {
    if (into.size() < after.size()) into.resize(after.size());
    for (size_t i = 0; i < after.size(); ++i) {
      into[i] += after[i] - (i < before.size() ? before[i] : 0);
    }
  }
};

struct Store {
  std::string name;  // tmpfs, null, tcp, shm
  std::string dir;   // mount point (podfs) or directory (tmpfs)
  std::string file;
  std::string expect = "pattern";
  std::vector<Subprocess> pods;               // destroyed after podfs
  std::vector<net::SocketAddress> pod_addresses;
  net::FabricConfig fabric;
  std::unique_ptr<cpuserver::Podfs> podfs;    // unmounted first
  std::map<std::string, std::vector<double>> figures;  // "seq.p50_us" -> per measured run
  std::map<std::string, Detail> details;               // "seq" / "random"
};

// The flags, checked and completed; nullopt after printing why not.
std::optional<Options> parse_options(int argc, char** argv) {
  Options o;
  std::string size = "256M", stripe = std::to_string(o.stripe);
  bool no_hugepage = false, no_probe = false;
  CLI::App app{"Page-in through podfs vs tmpfs and the null-store FUSE floor (docs/performance.md)"};
  bench::CommonFlags flags(app, o,
                           {.quick = "16M, 512 random pages, 1 pair, no warm-up: checks that it runs",
                            .pairs = "measured pairs per variant",
                            .warmup = "warm-up pairs per variant",
                            .dir = "mounts and logs (default: a fresh /tmp directory, removed after)"});
  auto* size_flag = app.add_option("--size", size, "file size (whole 2M units)")->capture_default_str();
  app.add_option("--stripe", stripe, "podfs stripe size")->capture_default_str();
  auto* pages_flag = app.add_option("--random-pages", o.random_pages, "pages touched at random")->capture_default_str();
  app.add_flag("--no-hugepage", no_hugepage, "no MADV_HUGEPAGE on the mapping");
  app.add_option("--variants", o.variants, "stores to measure; null is every ratio's baseline")
      ->delimiter(',')
      ->check(CLI::IsMember({"tmpfs", "null", "tcp", "shm"}))
      ->capture_default_str();
  app.add_flag("--no-probe", no_probe, "skip the fabric probe");
  app.add_option("--vmpod", o.vmpod_binary, "the vmpod binary (default: the build's)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    if (code == 0) std::exit(0);
    return std::nullopt;
  }
  flags.apply();
  o.hugepage = !no_hugepage;
  o.probe = !no_probe;
  auto size_bytes = parse_size(size);
  auto stripe_bytes = parse_size(stripe);
  if (!size_bytes || !stripe_bytes) {
    std::fprintf(stderr, "pagein_bench: %s\n", (!size_bytes ? size_bytes : stripe_bytes).error().to_string().c_str());
    return std::nullopt;
  }
  o.size = *size_bytes;
  o.stripe = *stripe_bytes;
  if (o.quick) {
    if (!*size_flag) o.size = 16ull << 20;
    if (!*pages_flag) o.random_pages = 512;
  }
  o.size = o.size / (2 << 20) * (2 << 20);  // whole stripes on both pods, whole huge pages
  if (o.size == 0) {
    std::fprintf(stderr, "pagein_bench: --size must be at least 2M\n");
    return std::nullopt;
  }
  if (std::find(o.variants.begin(), o.variants.end(), "null") == o.variants.end()) {
    std::fprintf(stderr, "pagein_bench: --variants must include null: it is the baseline of every ratio\n");
    return std::nullopt;
  }
  if (o.vmpod_binary.empty()) {
    o.vmpod_binary = bench::env_or("VMPOD_BINARY", bench::executable_dir() + "/../../cli/vmpod");
  }
  return o;
}

Status fill_file(const std::string& path, uint64_t size, bool with_pattern) {
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail_errno("open " + path, errno);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    ::close(fd);
    return fail_errno("ftruncate " + path, err);
  }
  if (with_pattern) {
    std::vector<uint8_t> chunk(1 << 20);
    for (uint64_t offset = 0; offset < size; offset += chunk.size()) {
      if (bench::stop_requested()) break;
      for (uint64_t p = 0; p < chunk.size() / kPage; ++p) {
        std::memset(chunk.data() + p * kPage, pattern_byte(offset / kPage + p), kPage);
      }
      size_t length = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size - offset));
      size_t done = 0;
      while (done < length) {
        ssize_t n = ::pwrite(fd, chunk.data() + done, length - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          int err = errno;
          ::close(fd);
          return fail_errno("pwrite " + path, err);
        }
        done += static_cast<size_t>(n);
      }
    }
  }
  if (::close(fd) != 0) return fail_errno("close " + path, errno);
  return {};
}

Result<std::vector<Subprocess>> start_memory_pods(const Options& o, const std::string& provider,
                                                  std::vector<net::SocketAddress>& addresses) {
  std::vector<Subprocess> pods;
  // Each pod holds half the file; leave room.
  uint64_t capacity = std::max<uint64_t>(o.size, 64ull << 20);
  for (int i = 0; i < 2; ++i) {
    std::string id = provider + "-mem" + std::to_string(i);
    net::SocketAddress address{net::SocketAddress::Kind::kUnix, o.dir + "/" + id + ".sock", "", 0};
    auto process = Subprocess::spawn({o.vmpod_binary, "memserver", "--id", id, "--listen", address.to_string(),
                                      "--capacity", std::to_string(capacity), "--provider", provider},
                                     o.dir + "/" + id + ".log");
    if (!process) return fail(process.error().context(id));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (true) {
      if (bench::stop_requested()) return fail(ErrorCode::kUnavailable, "interrupted");
      if (!process->running()) {
        return fail(ErrorCode::kUnavailable, id + " exited at start; see " + o.dir + "/" + id + ".log");
      }
      if (net::connect_socket(address, std::chrono::milliseconds(500))) break;
      if (std::chrono::steady_clock::now() > deadline) {
        return fail(ErrorCode::kUnavailable, id + " did not listen in time");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pods.push_back(std::move(*process));
    addresses.push_back(address);
  }
  return pods;
}

Status set_up(Store& store, const Options& o) {
  std::error_code ec;
  if (store.name == "tmpfs") {
    store.dir = fmt::format("/dev/shm/vmpod-pagein-{}", ::getpid());
    std::filesystem::create_directories(store.dir, ec);
    if (ec) return fail(ErrorCode::kInternal, "mkdir " + store.dir + ": " + ec.message());
    store.file = store.dir + "/ram";
    return fill_file(store.file, o.size, true);
  }
  store.dir = o.dir + "/" + store.name;
  std::filesystem::create_directories(store.dir, ec);
  if (ec) return fail(ErrorCode::kInternal, "mkdir " + store.dir + ": " + ec.message());
  cpuserver::PodfsConfig config;
  config.mountpoint = store.dir;
  config.owner = "pagein-bench";
  config.stripe_bytes = o.stripe;
  if (store.name == "null") {
    config.null_store = true;
    store.expect = "zero";
  } else {
    auto provider = net::parse_fabric_provider(store.name);
    if (!provider) return fail(provider.error());
    config.fabric.provider = *provider;
    auto pods = start_memory_pods(o, store.name, config.memory_pods);
    if (!pods) return fail(pods.error());
    store.pods = std::move(*pods);
    store.pod_addresses = config.memory_pods;
    store.fabric = config.fabric;
  }
  auto podfs = cpuserver::Podfs::mount(config);
  if (!podfs) return fail(podfs.error());
  store.podfs = std::move(*podfs);
  store.file = store.dir + "/ram";
  // The null store drops every WRITE: filling it would only cost time.
  return fill_file(store.file, o.size, store.name != "null");
}

void tear_down(Store& store) {
  store.podfs.reset();  // unmounts, deletes the file's regions on the pods
  for (auto& pod : store.pods) pod.stop(std::chrono::seconds(3));
  store.pods.clear();
  std::error_code ec;
  if (store.name == "tmpfs" && !store.dir.empty()) {
    std::filesystem::remove_all(store.dir, ec);
  } else if (!store.dir.empty()) {
    std::filesystem::remove(store.dir, ec);  // the empty mount point only
  }
}

Result<RunResult> run_toucher(Store& store, const Options& o, const std::string& mode, uint64_t seed,
                              Detail* detail) {
  if (store.podfs) {
    auto dropped = store.podfs->drop_cache();
    if (!dropped) return fail(dropped.error().context(store.name + ": drop_cache"));
  }
  cpuserver::PodfsStats before;
  std::optional<std::vector<pods::MemoryPodStats>> pods_before;
  if (store.podfs) before = store.podfs->stats();
  if (store.podfs && detail != nullptr && !store.pods.empty()) {
    auto stats = store.podfs->memory_pod_stats();
    if (stats) pods_before = std::move(*stats);
  }

  std::string out = o.dir + "/touch.out";
  ::unlink(out.c_str());
  std::string self = self_executable();
  std::vector<std::string> args = {self,
                                   "--touch", store.file,
                                   "--mode", mode,
                                   "--size", std::to_string(o.size),
                                   "--pages", std::to_string(o.random_pages),
                                   "--seed", std::to_string(seed),
                                   "--hugepage", o.hugepage ? "1" : "0",
                                   "--expect", store.expect,
                                   "--out", out};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return fail_errno("fork", errno);
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60 + o.size / (4ull << 20));
  int status = 0;
  while (true) {
    pid_t got = ::waitpid(pid, &status, WNOHANG);
    if (got == pid) break;
    if (bench::stop_requested() || std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      if (bench::stop_requested()) return fail(ErrorCode::kUnavailable, "interrupted");
      return fail(ErrorCode::kUnavailable, store.name + ": toucher timed out");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail(ErrorCode::kInternal, fmt::format("{}: toucher failed (status {:#x})", store.name, status));
  }
  RunResult result;
  FILE* f = std::fopen(out.c_str(), "rb");
  if (f == nullptr) return fail_errno("open " + out, errno);
  bool ok = std::fread(&result.header, sizeof(result.header), 1, f) == 1 && result.header.magic == kTouchMagic;
  std::vector<uint64_t> samples(ok ? result.header.count : 0);
  std::vector<uint8_t> major(samples.size());
  ok = ok && std::fread(samples.data(), sizeof(uint64_t), samples.size(), f) == samples.size() &&
       std::fread(major.data(), 1, major.size(), f) == major.size();
  std::fclose(f);
  ::unlink(out.c_str());
  if (!ok) return fail(ErrorCode::kInternal, store.name + ": toucher output unreadable");
  result.latency_us.reserve(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    double us = static_cast<double>(samples[i]) / 1000.0;
    result.latency_us.push_back(us);
    if (major[i]) result.major_us.push_back(us);
  }
  result.total_s = static_cast<double>(result.header.total_ns) / 1e9;

  if (detail != nullptr) {
    ++detail->runs;
    detail->mismatches += result.header.mismatches;
    if (result.header.madvise_result == 0) detail->madvise = "MADV_HUGEPAGE ok";
    else if (result.header.madvise_result < 0) {
      detail->madvise = std::string("MADV_HUGEPAGE failed: ") + std::strerror(result.header.madvise_errno);
    }
    detail->touch_us.insert(detail->touch_us.end(), result.latency_us.begin(), result.latency_us.end());
    detail->major_us.insert(detail->major_us.end(), result.major_us.begin(), result.major_us.end());
    detail->touches += result.header.count;
    detail->major_faults += result.header.major_faults;
    detail->minor_faults += result.header.minor_faults;
    if (store.podfs) {
      cpuserver::PodfsStats after = store.podfs->stats();
      detail->reads += after.reads - before.reads;
      detail->bytes_read += after.bytes_read - before.bytes_read;
      detail->zero_reads += after.zero_reads - before.zero_reads;
      detail->writes += after.writes - before.writes;
      detail->io_errors += after.io_errors - before.io_errors;
      Detail::add_latency(detail->read_latency, before.read_latency, after.read_latency);
      if (pods_before) {
        auto pods_after = store.podfs->memory_pod_stats();
        for (size_t i = 0; pods_after && i < pods_after->size() && i < pods_before->size(); ++i) {
          Detail::add_latency(detail->pod_read_latency, (*pods_before)[i].read_latency,
                              (*pods_after)[i].read_latency);
        }
      }
    }
  }
  if (result.header.mismatches > 0) {
    return fail(ErrorCode::kInternal,
                fmt::format("{}: {} touched pages held wrong data (first: page {} read {:#x}, expected {:#x})",
                            store.name, result.header.mismatches, result.header.first_mismatch_page,
                            result.header.first_mismatch_value, result.header.expected_value));
  }
  return result;
}

// The fabric alone: 1 MiB page reads from one memory pod straight through a
// MemoryPodClient (no FUSE, no page cache), one at a time and from several
// threads at once, to tell the fabric's share of a podfs READ.
struct ProbeResult {
  double serial_p50_us = 0, serial_p99_us = 0, serial_gbps = 0;
  unsigned threads = 4;
  double parallel_gbps = 0;
};

Result<ProbeResult> probe_fabric(const Store& store, const Options& o) {
  constexpr uint64_t kChunk = 1u << 20;
  pods::MemoryPodClient::Options options;
  options.fabric = store.fabric;
  auto client = pods::MemoryPodClient::connect(store.pod_addresses.at(0), options);
  if (!client) return fail(client.error().context("probe"));
  uint64_t chunks = 16;
  auto region = (*client)->create_region(chunks * kChunk, "pagein-bench-probe");
  if (!region) return fail(region.error().context("probe"));
  std::vector<std::byte> buffer(kChunk, std::byte{0x5a});
  Status status;
  for (uint64_t i = 0; i < chunks && status; ++i) status = (*client)->write(*region, i * kChunk, buffer);
  ProbeResult result;
  unsigned reps = o.quick ? 16 : 128;
  std::vector<double> latency;
  auto start = std::chrono::steady_clock::now();
  for (unsigned i = 0; i < reps && status && !bench::stop_requested(); ++i) {
    auto t0 = std::chrono::steady_clock::now();
    status = (*client)->read(*region, (i % chunks) * kChunk, buffer);
    latency.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  double serial_s = bench::seconds_since(start);
  std::atomic<bool> failed{false};
  start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < result.threads && status; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> mine(kChunk);
      for (unsigned i = 0; i < reps / result.threads && !failed; ++i) {
        if (!(*client)->read(*region, ((t + i * result.threads) % chunks) * kChunk, mine)) failed = true;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  double parallel_s = bench::seconds_since(start);
  (void)(*client)->delete_region(*region);
  if (!status) return fail(status.error().context("probe"));
  if (failed) return fail(ErrorCode::kInternal, "probe: a parallel read failed");
  result.serial_p50_us = vmpod::percentile(latency, 0.5);
  result.serial_p99_us = vmpod::percentile(latency, 0.99);
  result.serial_gbps = static_cast<double>(latency.size() * kChunk) / 1e9 / serial_s;
  result.parallel_gbps = static_cast<double>(reps / result.threads * result.threads * kChunk) / 1e9 / parallel_s;
  return result;
}

int driver_main(int argc, char** argv) {
  bench::install_stop_signals();
  auto parsed = parse_options(argc, argv);
  if (!parsed) return 2;
  Options o = *parsed;
  if (!std::filesystem::exists(o.vmpod_binary) &&
      (std::find(o.variants.begin(), o.variants.end(), "tcp") != o.variants.end() ||
       std::find(o.variants.begin(), o.variants.end(), "shm") != o.variants.end())) {
    std::fprintf(stderr, "pagein_bench: no vmpod binary at %s (set VMPOD_BINARY or --vmpod)\n",
                 o.vmpod_binary.c_str());
    return 2;
  }
  bool own_dir = o.dir.empty();
  if (own_dir) o.dir = fmt::format("/tmp/vmpod-bench-pagein-{}", ::getpid());
  std::error_code ec;
  std::filesystem::create_directories(o.dir, ec);
  auto started = std::chrono::steady_clock::now();
  std::string load_at_start = bench::load_average();

  std::vector<std::unique_ptr<Store>> stores;
  for (const auto& name : o.variants) {
    auto store = std::make_unique<Store>();
    store->name = name;
    stores.push_back(std::move(store));
  }
  int exit_code = 0;
  std::string failure;
  for (auto& store : stores) {
    std::fprintf(stderr, "pagein_bench: setting up %s (%s)\n", store->name.c_str(), format_bytes(o.size).c_str());
    auto ready = set_up(*store, o);
    if (!ready) {
      failure = store->name + ": " + ready.error().to_string();
      break;
    }
    if (bench::stop_requested()) break;
  }

  unsigned rounds = o.warmup + o.pairs;
  for (unsigned round = 0; failure.empty() && round < rounds && !bench::stop_requested(); ++round) {
    bool measured = round >= o.warmup;
    std::fprintf(stderr, "pagein_bench: round %u/%u%s\n", round + 1, rounds, measured ? "" : " (warm-up)");
    // Alternate the order so drift over time does not favour one store.
    std::vector<Store*> order;
    for (auto& s : stores) order.push_back(s.get());
    if (round % 2 == 1) std::reverse(order.begin(), order.end());
    uint64_t seed = 0x5eed0000 + round;  // the same random pages for every store in a round
    for (const std::string mode : {"seq", "random"}) {
      for (Store* store : order) {
        if (!failure.empty() || bench::stop_requested()) break;
        Detail* detail = measured ? &store->details[mode] : nullptr;
        auto run = run_toucher(*store, o, mode, seed, detail);
        if (!run) {
          if (!bench::stop_requested()) failure = run.error().to_string();
          break;
        }
        if (!measured) continue;
        store->figures[mode + ".p50_us"].push_back(vmpod::percentile(run->latency_us, 0.50));
        store->figures[mode + ".p99_us"].push_back(vmpod::percentile(run->latency_us, 0.99));
        if (mode == "seq") {
          store->figures["seq.gbps"].push_back(static_cast<double>(o.size) / 1e9 / run->total_s);
        } else {
          store->figures["random.major_p50_us"].push_back(vmpod::percentile(run->major_us, 0.50));
          store->figures["random.major_p99_us"].push_back(vmpod::percentile(run->major_us, 0.99));
        }
      }
    }
  }

  std::map<std::string, ProbeResult> probes;
  for (auto& s : stores) {
    if (!o.probe || !failure.empty() || bench::stop_requested() || s->pod_addresses.empty()) continue;
    std::fprintf(stderr, "pagein_bench: probing the %s fabric alone\n", s->name.c_str());
    auto probe = probe_fabric(*s, o);
    if (!probe) failure = s->name + ": " + probe.error().to_string();
    else probes[s->name] = *probe;
  }

  Store* null_store = nullptr;
  for (auto& s : stores) {
    if (s->name == "null") null_store = s.get();
  }
  nlohmann::json doc;
  std::vector<Figure> figures;
  std::vector<Goal> goals;
  bool complete = failure.empty() && !bench::stop_requested();
  if (complete) {
    const char* keys[] = {"seq.p50_us",    "seq.p99_us",          "seq.gbps",
                          "random.p50_us", "random.p99_us",       "random.major_p50_us",
                          "random.major_p99_us"};
    for (const char* key : keys) {
      for (auto& s : stores) {
        if (s.get() == null_store) continue;
        // tmpfs never waits for a READ: it has no major faults to report.
        if (s->name == "tmpfs" && std::string(key).find("major") != std::string::npos) continue;
        Figure f;
        f.name = fmt::format("pagein.{}.{}", key, s->name);
        f.subject_key = s->name == "tmpfs" ? "tmpfs" : "vmpod";
        f.baseline_key = "null";
        f.subject = s->figures[key];
        f.baseline = null_store->figures[key];
        figures.push_back(f);
      }
    }
    auto figure = [&](const std::string& name) -> const Figure* {
      for (const auto& f : figures) {
        if (f.name == name) return &f;
      }
      return nullptr;
    };
    for (const char* provider : {"tcp", "shm"}) {
      if (const Figure* f = figure(fmt::format("pagein.random.p50_us.{}", provider))) {
        goals.push_back(Goal{f->name, "ratio", true, 1.5, bench::summarize(f->ratios()).median,
                             "median of per-pair vmpod/null, every touch"});
      }
      // The same goal read strictly: only touches that waited for a READ.
      if (const Figure* f = figure(fmt::format("pagein.random.major_p50_us.{}", provider))) {
        goals.push_back(Goal{f->name, "ratio", true, 1.5, bench::summarize(f->ratios()).median,
                             "median of per-pair vmpod/null, major faults only"});
      }
    }
    if (const Figure* f = figure("pagein.seq.gbps.shm")) {
      goals.push_back(Goal{f->name, "vmpod_GB/s", false, 0.7, bench::summarize(f->subject).median, "median"});
    }
    if (const Figure* f = figure("pagein.seq.gbps.tcp")) {
      goals.push_back(Goal{f->name, "vmpod_GB/s", false, 0.5, bench::summarize(f->subject).median, "median"});
    }

    std::printf("# pagein_bench size=%s stripe=%s random_pages=%llu pairs=%u warmup=%u hugepage=%s quick=%s"
                " loadavg=%s..%s cpus=%u\n",
                format_bytes(o.size).c_str(), format_bytes(o.stripe).c_str(),
                static_cast<unsigned long long>(o.random_pages), o.pairs,
                o.warmup, o.hugepage ? "on(MADV_HUGEPAGE)" : "off", o.quick ? "yes" : "no",
                load_at_start.c_str(), bench::load_average().c_str(), std::thread::hardware_concurrency());
    std::printf("# values: median of runs (per-run p50/p99 of every touch; major_*: of the touches that"
                " were major faults, i.e. waited for a READ; GB/s = size / sequential pass);"
                " ratio: median of per-pair ratios to the null store (latency: lower is better;"
                " GB/s: higher is better)\n");
    for (const auto& f : figures) std::printf("%s\n", f.line().c_str());
    for (const auto& g : goals) std::printf("%s\n", g.line().c_str());
    for (auto& s : stores) {
      for (auto& [mode, d] : s->details) {
        double runs = std::max(1u, d.runs);
        std::string line = fmt::format(
            "# detail {} {}: {}; all touches pooled p50={}us p90={}us p99={}us max={}us;"
            " per run: touches={} major_faults={} minor_faults={}",
            s->name, mode, d.madvise, bench::format_value(vmpod::percentile(d.touch_us, 0.5)),
            bench::format_value(vmpod::percentile(d.touch_us, 0.9)),
            bench::format_value(vmpod::percentile(d.touch_us, 0.99)),
            bench::format_value(vmpod::percentile(d.touch_us, 1.0)), bench::format_value(d.touches / runs),
            bench::format_value(d.major_faults / runs), bench::format_value(d.minor_faults / runs));
        if (!d.major_us.empty()) {
          line += fmt::format("; major-fault touches pooled p50={}us p99={}us",
                              bench::format_value(vmpod::percentile(d.major_us, 0.5)),
                              bench::format_value(vmpod::percentile(d.major_us, 0.99)));
        }
        if (s->podfs && d.runs > 0) {
          double per_run = static_cast<double>(d.reads) / d.runs;
          line += fmt::format("; podfs READs/run={} avg_READ={}KiB zero_READs={} server_READ p50={}us p99={}us io_errors={}",
                              bench::format_value(per_run),
                              bench::format_value(d.reads ? static_cast<double>(d.bytes_read) / d.reads / 1024 : 0),
                              d.zero_reads, bench::format_value(histogram_quantile_us(d.read_latency, 0.5)),
                              bench::format_value(histogram_quantile_us(d.read_latency, 0.99)), d.io_errors);
          if (histogram_count(d.pod_read_latency) > 0) {
            line += fmt::format("; memory-pod page reads={} p50={}us p99={}us", histogram_count(d.pod_read_latency),
                                bench::format_value(histogram_quantile_us(d.pod_read_latency, 0.5)),
                                bench::format_value(histogram_quantile_us(d.pod_read_latency, 0.99)));
          }
        }
        std::printf("%s\n", line.c_str());
      }
    }
    for (const auto& [name, probe] : probes) {
      std::printf("# probe %s: 1 MiB reads from one memory pod through MemoryPodClient (no FUSE): one at a time"
                  " p50=%sus p99=%sus (%s GB/s); %u threads at once: %s GB/s\n",
                  name.c_str(), bench::format_value(probe.serial_p50_us).c_str(),
                  bench::format_value(probe.serial_p99_us).c_str(), bench::format_value(probe.serial_gbps).c_str(),
                  probe.threads, bench::format_value(probe.parallel_gbps).c_str());
      doc["probe"][name] = {{"serial_p50_us", probe.serial_p50_us}, {"serial_p99_us", probe.serial_p99_us},
                            {"serial_gbps", probe.serial_gbps}, {"threads", probe.threads},
                            {"parallel_gbps", probe.parallel_gbps}};
    }
    std::fflush(stdout);

    doc["bench"] = "pagein";
    doc["loadavg"] = {load_at_start, bench::load_average()};
    doc["config"] = {{"size_bytes", o.size}, {"stripe_bytes", o.stripe}, {"random_pages", o.random_pages}, {"pairs", o.pairs},
                     {"warmup", o.warmup}, {"hugepage", o.hugepage}, {"quick", o.quick},
                     {"variants", o.variants}};
    for (const auto& f : figures) doc["figures"].push_back(f.to_json());
    for (const auto& g : goals) doc["goals"].push_back(g.to_json());
    for (auto& s : stores) {
      for (auto& [mode, d] : s->details) {
        doc["details"][s->name][mode] = {
            {"madvise", d.madvise},
            {"runs", d.runs},
            {"touch_p50_us", vmpod::percentile(d.touch_us, 0.5)},
            {"touch_p99_us", vmpod::percentile(d.touch_us, 0.99)},
            {"touches_per_run", d.runs ? d.touches / d.runs : 0},
            {"major_faults_per_run", d.runs ? d.major_faults / d.runs : 0},
            {"minor_faults_per_run", d.runs ? d.minor_faults / d.runs : 0},
            {"major_touch_p50_us", vmpod::percentile(d.major_us, 0.5)},
            {"major_touch_p99_us", vmpod::percentile(d.major_us, 0.99)},
            {"podfs_reads", d.reads},
            {"podfs_bytes_read", d.bytes_read},
            {"podfs_zero_reads", d.zero_reads},
            {"server_read_p50_us", histogram_quantile_us(d.read_latency, 0.5)},
            {"server_read_p99_us", histogram_quantile_us(d.read_latency, 0.99)},
            {"memory_pod_reads", histogram_count(d.pod_read_latency)},
            {"memory_pod_read_p50_us", histogram_quantile_us(d.pod_read_latency, 0.5)},
            {"memory_pod_read_p99_us", histogram_quantile_us(d.pod_read_latency, 0.99)},
        };
      }
    }
  }

  // Clean up in reverse: each podfs is unmounted before its pods stop.
  for (auto it = stores.rbegin(); it != stores.rend(); ++it) tear_down(**it);
  int finished = bench::finish("pagein_bench", o.dir, own_dir, failure, doc, o.json, started);
  return finished != 0 ? finished : exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--touch") return touch_main(argc, argv);
  return driver_main(argc, argv);
}
