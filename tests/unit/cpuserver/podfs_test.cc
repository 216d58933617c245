// Podfs mounted for real over two in-process memory pods (tcp fabric on
// loopback), driven with plain syscalls from this process. Never mmap a
// podfs file here: this process also serves it (see podfs.h).
//
// Criterion forks per test, so each test mounts and unmounts its own podfs;
// everything is held in globals so that fini cleans up after a failed
// assertion (which skips destructors), and a crash_cleanup::Watchdog
// unwedges and cleans up after a crash (which skips fini too).
#include <criterion/criterion.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/cpuserver/podfs.h>
#include <vmpod/cpuserver/podfs_placement.h>
#include <vmpod/cpuserver/stripe_layout.h>
#include <vmpod/memserver/memserver.h>

#include "crash_cleanup.h"

using namespace vmpod;
using namespace vmpod::cpuserver;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kStripe = 64 * kKiB;
constexpr uint64_t kPodCapacity = 16 * kMiB;
constexpr size_t kPods = 2;

std::string g_dir;
std::string g_mnt;
// Never destroyed at exit: libfabric's psm library turns a crash into exit(),
// and these destructors would then wait on the crashed thread's calls.
std::vector<std::unique_ptr<memserver::Memserver>>& g_pods =
    *new std::vector<std::unique_ptr<memserver::Memserver>>;
std::unique_ptr<Podfs>& g_fs = *new std::unique_ptr<Podfs>;
// A second mount on the same memory pods, as another host's: files move
// between the two (see mount_other).
std::string g_other_mnt;
std::unique_ptr<Podfs>& g_other_fs = *new std::unique_ptr<Podfs>;

bool mounted(const std::string& path) {
  std::ifstream mounts("/proc/mounts");
  std::string device, point, rest;
  while (mounts >> device >> point && std::getline(mounts, rest)) {
    if (point == path) return true;
  }
  return false;
}

crash_cleanup::Watchdog g_watchdog;
crash_cleanup::Watchdog g_other_watchdog;

// Closes whatever a failed test left open under the mount, so that the
// unmount does not wait for it.
void close_files_under(const std::string& dir) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (!ec && target.string().rfind(dir, 0) == 0) {
      ::close(std::stoi(entry.path().filename().string()));
    }
  }
}

void setup() {
  ::umask(022);
  char tmpl[] = "/tmp/vmpod-podfs-XXXXXX";
  cr_assert_not_null(::mkdtemp(tmpl));
  g_dir = tmpl;
  g_mnt = g_dir + "/mnt";
  cr_assert_eq(::mkdir(g_mnt.c_str(), 0755), 0);
  cr_assert(g_watchdog.start(g_dir, g_mnt), "cannot start the cleanup watchdog");
  for (size_t i = 0; i < kPods; ++i) {
    memserver::MemserverConfig config;
    config.pod_id = "mem" + std::to_string(i);
    config.control.kind = net::SocketAddress::Kind::kUnix;
    config.control.path = g_dir + "/mem" + std::to_string(i) + ".sock";
    config.fabric.provider = net::FabricProvider::kTcp;
    config.fabric.node = "127.0.0.1";
    config.capacity_bytes = kPodCapacity;
    auto pod = memserver::Memserver::start(config);
    cr_assert(pod.has_value(), "memory pod %zu: %s", i, pod ? "" : pod.error().to_string().c_str());
    g_pods.push_back(std::move(*pod));
  }
}

void teardown() {
  for (const std::string* mnt : {&g_mnt, &g_other_mnt}) {
    if (!mnt->empty()) close_files_under(*mnt);
  }
  g_fs.reset();
  g_other_fs.reset();
  for (const std::string* mnt : {&g_mnt, &g_other_mnt}) {
    if (!mnt->empty() && mounted(*mnt)) ::umount2(mnt->c_str(), MNT_DETACH);
  }
  g_other_watchdog.stop();
  g_pods.clear();
  if (!g_dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
  }
  g_watchdog.stop();
}

Result<std::unique_ptr<Podfs>> mount_at(const std::string& mnt, uint64_t cache_bytes, bool allow_other) {
  PodfsConfig config;
  config.mountpoint = mnt;
  for (auto& pod : g_pods) config.memory_pods.push_back(pod->control_address());
  config.fabric.provider = net::FabricProvider::kTcp;
  config.fabric.node = "127.0.0.1";
  config.stripe_bytes = kStripe;
  config.local_cache_bytes = cache_bytes;
  config.max_threads = 8;
  config.allow_other = allow_other;
  return Podfs::mount(config);
}

Podfs& mount(uint64_t cache_bytes = 0, bool allow_other = false) {
  auto fs = mount_at(g_mnt, cache_bytes, allow_other);
  cr_assert(fs.has_value(), "mount: %s", fs ? "" : fs.error().to_string().c_str());
  g_fs = std::move(*fs);
  g_watchdog.mounted(g_mnt);
  cr_assert(mounted(g_mnt), "%s not in /proc/mounts", g_mnt.c_str());
  return *g_fs;
}

// The other host's podfs, at g_other_mnt, with a watchdog of its own.
Podfs& mount_other() {
  g_other_mnt = g_dir + "/other";
  cr_assert_eq(::mkdir(g_other_mnt.c_str(), 0755), 0);
  cr_assert(g_other_watchdog.start(g_dir, g_other_mnt), "cannot start the cleanup watchdog");
  auto fs = mount_at(g_other_mnt, 0, false);
  cr_assert(fs.has_value(), "mount: %s", fs ? "" : fs.error().to_string().c_str());
  g_other_fs = std::move(*fs);
  g_other_watchdog.mounted(g_other_mnt);
  return *g_other_fs;
}

std::string path(const std::string& name) { return g_mnt + "/" + name; }

std::vector<char> pattern(size_t size, uint32_t seed) {
  std::vector<char> out(size);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : out) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>((x >> 16) | 1);
  }
  return out;
}

void write_at(int fd, uint64_t offset, const std::vector<char>& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    cr_assert_gt(n, 0, "pwrite %zu at %llu: %s", data.size() - done,
                 static_cast<unsigned long long>(offset + done), strerror(errno));
    done += static_cast<size_t>(n);
  }
}

std::vector<char> read_at(int fd, uint64_t offset, size_t size) {
  std::vector<char> out(size, '\x7f');
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out.data() + done, size - done, static_cast<off_t>(offset + done));
    cr_assert_geq(n, 0, "pread at %llu: %s", static_cast<unsigned long long>(offset + done),
                  strerror(errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

bool all_zero(const std::vector<char>& bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

int open_file(const std::string& name, int flags = O_RDWR | O_CREAT, mode_t mode = 0644) {
  int fd = ::open(path(name).c_str(), flags | O_CLOEXEC, mode);
  cr_assert_geq(fd, 0, "open %s: %s", name.c_str(), strerror(errno));
  return fd;
}

uint64_t file_size(int fd) {
  struct stat st {};
  cr_assert_eq(::fstat(fd, &st), 0);
  return static_cast<uint64_t>(st.st_size);
}

uint64_t pod_regions() {
  uint64_t total = 0;
  for (auto& pod : g_pods) total += pod->store().stats().regions;
  return total;
}

uint64_t pod_reads() {
  uint64_t total = 0;
  for (auto& pod : g_pods) total += pod->store().stats().reads;
  return total;
}

uint64_t pod_pages() {
  uint64_t total = 0;
  for (auto& pod : g_pods) total += pod->store().stats().pages_held;
  return total;
}

// Waits for the kernel's FORGET to reach podfs and the regions to go.
bool wait_regions(uint64_t want, std::chrono::milliseconds timeout = 3s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pod_regions() != want) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

std::set<std::string> list(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  cr_assert_not_null(d, "opendir %s: %s", dir.c_str(), strerror(errno));
  while (dirent* entry = ::readdir(d)) names.insert(entry->d_name);
  ::closedir(d);
  return names;
}

struct Piece {
  uint64_t offset;
  size_t size;
};

// Pieces that start, end and cross 64 KiB stripe boundaries, on both pods.
const Piece kPieces[] = {
    {0, 100},
    {kStripe - 10, 20},                  // across stripe 0 -> 1 (pod 0 -> pod 1)
    {3 * kStripe - 4 * kKiB, 8 * kKiB},  // across stripe 2 -> 3, page aligned
    {5 * kStripe + 123, 3 * kStripe},    // over four stripes, unaligned
    {kMiB - 100, kMiB + 200},            // a 1 MiB write spanning 18 stripes
    {4 * kMiB, 4 * kKiB},                // far out, one page
};

void check_pieces(int fd, const char* when) {
  uint32_t seed = 1;
  for (const Piece& p : kPieces) {
    auto got = read_at(fd, p.offset, p.size);
    cr_assert(got == pattern(p.size, seed), "%s: %zu bytes at %llu differ", when, p.size,
              static_cast<unsigned long long>(p.offset));
    ++seed;
  }
  // Holes between the pieces read as zeros.
  cr_assert(all_zero(read_at(fd, 200, kStripe - 300)), "%s: hole in stripe 0", when);
  cr_assert(all_zero(read_at(fd, 2 * kMiB + 100, kMiB)), "%s: hole at 2 MiB", when);
}

// Polls `done` until it holds or `timeout` passes.
template <class Predicate>
bool wait_until(Predicate done, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// Pages of [offset, offset + length) in the page cache: cachestat(2)
// (Linux 6.5) sees residency without mapping the file.
uint64_t cached_pages(int fd, uint64_t offset, uint64_t length) {
  constexpr long kCachestat = 451;  // not in this libc's headers yet
  struct {
    uint64_t offset, length;
  } range{offset, length};
  struct {
    uint64_t cache, dirty, writeback, evicted, recently_evicted;
  } stat{};
  cr_assert_eq(::syscall(kCachestat, fd, &range, &stat, 0), 0, "cachestat: %s", strerror(errno));
  return stat.cache;
}

constexpr uint64_t pages(uint64_t bytes) { return bytes / (4 * kKiB); }

// A file of `size` bytes of pattern(size, seed), written and then dropped
// from the cache, so that every read of it is a READ again.
std::vector<char> written_file(Podfs& fs, const std::string& name, size_t size, uint32_t seed) {
  auto data = pattern(size, seed);
  int fd = open_file(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  write_at(fd, 0, data);
  ::close(fd);
  cr_assert(fs.drop_cache().has_value());
  return data;
}

std::vector<ReadExtent> chunks(std::initializer_list<uint64_t> indexes) {
  std::vector<ReadExtent> out;
  for (uint64_t i : indexes) out.push_back(ReadExtent{i * kMiB, kMiB});
  return out;
}

// Reads `extents` of the file on a thread of its own, as the guest would
// (never a FUSE worker), with no readahead, so that the READs are exactly
// the extents. Criterion cannot assert off the main thread: returns how
// many extents read back other than `data`, or -1 if the file would not
// open.
int read_on_other_thread(const std::string& name, const std::vector<ReadExtent>& extents,
                         const std::vector<char>& data) {
  int wrong = 0;
  std::thread reader([&] {
    int fd = ::open(path(name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      wrong = -1;
      return;
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    for (const ReadExtent& e : extents) {
      std::vector<char> got(e.length);
      ssize_t n = ::pread(fd, got.data(), got.size(), static_cast<off_t>(e.offset));
      if (n != static_cast<ssize_t>(e.length) ||
          !std::equal(got.begin(), got.end(), data.begin() + static_cast<long>(e.offset))) {
        ++wrong;
      }
    }
    ::close(fd);
  });
  reader.join();
  return wrong;
}

template <class T>
bool fails_with(const Result<T>& result, ErrorCode code) {
  return !result && result.error().code() == code;
}

bool prefetch_ended(Podfs& fs, uint64_t extents) {
  PodfsStats s = fs.stats();
  return s.prefetch_extents + s.prefetch_abandoned == extents;
}

std::string extents_text(const std::vector<ReadExtent>& extents) {
  std::string out;
  for (const ReadExtent& e : extents) {
    out += std::to_string(e.offset) + "+" + std::to_string(e.length) + " ";
  }
  return out;
}

}  // namespace

TestSuite(podfs, .init = setup, .fini = teardown, .timeout = 60);

Test(podfs, data_round_trips_across_stripes) {
  Podfs& fs = mount();
  int fd = open_file("ram", O_RDWR | O_CREAT | O_EXCL, 0600);
  uint32_t seed = 1;
  for (const Piece& p : kPieces) write_at(fd, p.offset, pattern(p.size, seed++));
  cr_expect_eq(file_size(fd), 4 * kMiB + 4 * kKiB);
  cr_expect_eq(::fsync(fd), 0, "fsync: %s", strerror(errno));
  cr_expect_eq(::fdatasync(fd), 0);
  check_pieces(fd, "cached");
  // Both pods hold a share of the data.
  for (size_t i = 0; i < kPods; ++i) {
    cr_expect_gt(g_pods[i]->store().stats().pages_held, 0u, "pod %zu holds nothing", i);
  }
  auto written = fs.stats();
  cr_expect_gt(written.writes, 0u);
  cr_expect_geq(written.bytes_written, kMiB + 200);
  cr_expect_eq(written.files, 1u);

  // With the host's cache gone, every byte comes from the memory pods.
  uint64_t pod_reads_before = pod_reads();
  auto before = fs.stats();
  cr_assert(fs.drop_cache().has_value());
  cr_expect_eq(fs.stats().cached_bytes, 0u);
  check_pieces(fd, "after drop_cache");
  auto after = fs.stats();
  cr_expect_gt(after.reads, before.reads, "no READ reached podfs after drop_cache");
  cr_expect_gt(after.reads - after.zero_reads, before.reads - before.zero_reads,
               "no remote READ after drop_cache");
  cr_expect_gt(pod_reads(), pod_reads_before, "memory pods served no reads");
  cr_expect_gt(after.cached_bytes, 0u, "READs were not accounted in the cache");
  for (size_t i = 0; i < kPods; ++i) {
    cr_expect_gt(g_pods[i]->store().stats().reads, 0u, "pod %zu served no reads", i);
  }
  cr_expect_eq(after.io_errors, 0u);
  auto pod_stats = fs.memory_pod_stats();
  cr_assert(pod_stats.has_value());
  cr_expect_eq(pod_stats->size(), kPods);
  cr_expect(!fs.failure().has_value());
  ::close(fd);
}

Test(podfs, unwritten_ranges_are_zeros_without_pod_reads) {
  Podfs& fs = mount();
  int fd = open_file("sparse");
  cr_assert_eq(::ftruncate(fd, static_cast<off_t>(2 * kMiB)), 0, "%s", strerror(errno));
  cr_expect_eq(file_size(fd), 2 * kMiB);
  cr_expect_eq(pod_pages(), 0u);
  auto before = fs.stats();
  cr_assert(all_zero(read_at(fd, 0, 2 * kMiB)));
  auto after = fs.stats();
  cr_expect_gt(after.zero_reads, before.zero_reads, "zero_reads did not move");
  cr_expect_eq(after.reads - after.zero_reads, before.reads - before.zero_reads,
               "an unwritten range went to the network");
  cr_expect_eq(pod_reads(), 0u, "memory pods were asked for pages nobody wrote");

  // One written page far away does not make the start of the file remote.
  write_at(fd, 8 * kMiB, pattern(4 * kKiB, 5));
  cr_assert(fs.drop_cache().has_value());
  cr_assert(all_zero(read_at(fd, 0, 64 * kKiB)));
  cr_expect_eq(pod_reads(), 0u);
  cr_expect(read_at(fd, 8 * kMiB, 4 * kKiB) == pattern(4 * kKiB, 5));
  cr_expect_gt(pod_reads(), 0u, "a written page was not read from its pod");
  ::close(fd);
}

Test(podfs, truncate_shrink_then_grow_reads_zeros) {
  Podfs& fs = mount();
  int fd = open_file("trunc");
  auto data = pattern(300 * kKiB, 3);
  write_at(fd, 0, data);
  uint64_t cut = 100 * kKiB + 123;  // inside a page, inside stripe 1
  cr_assert_eq(::ftruncate(fd, static_cast<off_t>(cut)), 0, "%s", strerror(errno));
  cr_expect_eq(file_size(fd), cut);
  cr_expect_eq(read_at(fd, 0, 300 * kKiB).size(), cut, "read past the end returned data");
  cr_assert_eq(::ftruncate(fd, static_cast<off_t>(300 * kKiB)), 0, "%s", strerror(errno));
  cr_expect_eq(file_size(fd), 300 * kKiB);
  for (int pass = 0; pass < 2; ++pass) {
    auto got = read_at(fd, 0, 300 * kKiB);
    cr_assert_eq(got.size(), 300 * kKiB);
    cr_assert(std::equal(got.begin(), got.begin() + static_cast<long>(cut), data.begin()),
              "pass %d: data before the cut changed", pass);
    cr_assert(all_zero(std::vector<char>(got.begin() + static_cast<long>(cut), got.end())),
              "pass %d: old data came back past the cut", pass);
    cr_assert(fs.drop_cache().has_value());  // the second pass reads from the pods
  }
  // Truncate through the path, and to zero.
  cr_assert_eq(::truncate(path("trunc").c_str(), 0), 0);
  cr_expect_eq(file_size(fd), 0u);
  cr_expect(read_at(fd, 0, 4096).empty());
  // O_TRUNC empties the file as well.
  write_at(fd, 0, pattern(10 * kKiB, 4));
  int again = open_file("trunc", O_RDWR | O_TRUNC);
  cr_expect_eq(file_size(again), 0u);
  cr_assert_eq(::ftruncate(again, static_cast<off_t>(10 * kKiB)), 0);
  cr_expect(all_zero(read_at(again, 0, 10 * kKiB)));
  ::close(again);
  ::close(fd);
}

Test(podfs, punch_hole_reads_zeros) {
  Podfs& fs = mount();
  int fd = open_file("holes");
  auto data = pattern(512 * kKiB, 6);
  write_at(fd, 0, data);
  uint64_t pages_before = pod_pages();
  uint64_t from = 70000, length = 200000;  // unaligned, over several stripes
  cr_assert_eq(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                           static_cast<off_t>(length)), 0, "punch: %s", strerror(errno));
  cr_expect_eq(file_size(fd), 512 * kKiB, "a KEEP_SIZE punch changed the size");
  cr_expect_lt(pod_pages(), pages_before, "the pods still hold the punched pages");
  for (int pass = 0; pass < 2; ++pass) {
    auto got = read_at(fd, 0, 512 * kKiB);
    cr_assert_eq(got.size(), 512 * kKiB);
    for (size_t i = 0; i < got.size(); ++i) {
      char want = (i >= from && i < from + length) ? 0 : data[i];
      cr_assert_eq(got[i], want, "pass %d: byte %zu", pass, i);
    }
    cr_assert(fs.drop_cache().has_value());
  }
  // A punch past the end is a no-op; other modes are not supported.
  cr_expect_eq(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(kMiB),
                           4096), 0);
  cr_expect_eq(::fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, 4096), -1);
  cr_expect_eq(errno, EOPNOTSUPP, "%s", strerror(errno));
  // A plain fallocate grows the file without writing.
  uint64_t pages = pod_pages();
  cr_assert_eq(::fallocate(fd, 0, 0, static_cast<off_t>(2 * kMiB)), 0, "%s", strerror(errno));
  cr_expect_eq(file_size(fd), 2 * kMiB);
  cr_expect_eq(pod_pages(), pages);
  cr_expect(all_zero(read_at(fd, 512 * kKiB, kMiB)));
  ::close(fd);
}

Test(podfs, namespace_and_attributes) {
  Podfs& fs = mount();
  cr_assert_eq(::mkdir(path("dir").c_str(), 0750), 0, "%s", strerror(errno));
  cr_expect_eq(::mkdir(path("dir").c_str(), 0750), -1);
  cr_expect_eq(errno, EEXIST);
  int fd = open_file("dir/file", O_RDWR | O_CREAT | O_EXCL, 0640);
  write_at(fd, 0, pattern(5000, 7));
  ::close(fd);

  struct stat st {};
  cr_assert_eq(::stat(path("dir").c_str(), &st), 0);
  cr_expect(S_ISDIR(st.st_mode));
  cr_expect_eq(st.st_mode & 07777, 0750u);
  cr_expect_eq(st.st_nlink, 2u);
  cr_assert_eq(::stat(path("dir/file").c_str(), &st), 0);
  cr_expect(S_ISREG(st.st_mode));
  cr_expect_eq(st.st_mode & 07777, 0640u);
  cr_expect_eq(st.st_size, 5000);
  cr_expect_eq(st.st_uid, ::getuid());
  cr_expect_eq(st.st_nlink, 1u);
  cr_assert_eq(::stat(g_mnt.c_str(), &st), 0);
  cr_expect_eq(st.st_nlink, 3u, "root nlink %lu with one subdirectory",
               static_cast<unsigned long>(st.st_nlink));

  cr_assert_eq(::chmod(path("dir/file").c_str(), 0600), 0);
  cr_assert_eq(::chown(path("dir/file").c_str(), 1234, 5678), 0, "%s", strerror(errno));
  cr_assert_eq(::stat(path("dir/file").c_str(), &st), 0);
  cr_expect_eq(st.st_mode & 07777, 0600u);
  cr_expect(S_ISREG(st.st_mode), "chmod lost the file type");
  cr_expect_eq(st.st_uid, 1234u);
  cr_expect_eq(st.st_gid, 5678u);

  for (const char* name : {"a", "b", "c"}) ::close(open_file(std::string("dir/") + name));
  cr_expect(list(path("dir")) == (std::set<std::string>{".", "..", "file", "a", "b", "c"}));
  cr_expect(list(g_mnt) == (std::set<std::string>{".", "..", "dir"}));

  // Rename within and across directories; the data moves with the name.
  cr_assert_eq(::rename(path("dir/file").c_str(), path("moved").c_str()), 0, "%s", strerror(errno));
  cr_expect_eq(::stat(path("dir/file").c_str(), &st), -1);
  cr_expect_eq(errno, ENOENT);
  fd = open_file("moved", O_RDONLY);
  cr_expect(read_at(fd, 0, 5000) == pattern(5000, 7));
  ::close(fd);
  // Rename over an existing file frees the victim's regions.
  uint64_t regions = pod_regions();
  cr_assert_eq(::rename(path("dir/a").c_str(), path("dir/b").c_str()), 0, "%s", strerror(errno));
  cr_expect(wait_regions(regions - kPods), "the replaced file's regions were not freed: %llu",
            static_cast<unsigned long long>(pod_regions()));
  cr_expect(list(path("dir")) == (std::set<std::string>{".", "..", "b", "c"}));
  cr_assert_eq(::rename(path("dir").c_str(), path("dir2").c_str()), 0);
  cr_expect(list(g_mnt) == (std::set<std::string>{".", "..", "dir2", "moved"}));

  struct statvfs vfs {};
  cr_assert_eq(::statvfs(g_mnt.c_str(), &vfs), 0, "%s", strerror(errno));
  cr_expect_eq(vfs.f_bsize, 4096u);
  cr_expect_eq(vfs.f_blocks * vfs.f_frsize, kPods * kPodCapacity, "capacity %llu",
               static_cast<unsigned long long>(vfs.f_blocks * vfs.f_frsize));
  cr_expect_eq(vfs.f_blocks - vfs.f_bfree, pod_pages());
  cr_expect_gt(pod_pages(), 0u);
  cr_expect_eq(fs.stats().files, 3u);  // moved, dir2/b (was a), dir2/c
}

Test(podfs, removal_rules) {
  mount();
  cr_assert_eq(::mkdir(path("full").c_str(), 0755), 0);
  ::close(open_file("full/child"));
  cr_expect_eq(::rmdir(path("full").c_str()), -1);
  cr_expect_eq(errno, ENOTEMPTY, "%s", strerror(errno));
  cr_expect_eq(::unlink(path("full").c_str()), -1);
  cr_expect_eq(errno, EISDIR, "%s", strerror(errno));
  cr_expect_eq(::rmdir(path("full/child").c_str()), -1);
  cr_expect_eq(errno, ENOTDIR, "%s", strerror(errno));
  cr_expect_eq(::unlink(path("nothing").c_str()), -1);
  cr_expect_eq(errno, ENOENT);
  cr_expect_eq(::open(path("nothing").c_str(), O_RDONLY), -1);
  cr_expect_eq(errno, ENOENT);
  cr_expect_eq(::open(path("nodir/file").c_str(), O_RDWR | O_CREAT, 0644), -1);
  cr_expect_eq(errno, ENOENT);
  cr_expect_eq(::mkfifo(path("fifo").c_str(), 0644), -1, "podfs made a fifo");
  // A directory is not a file.
  cr_expect_eq(::truncate(path("full").c_str(), 0), -1);
  cr_assert_eq(::unlink(path("full/child").c_str()), 0);
  cr_assert_eq(::rmdir(path("full").c_str()), 0, "%s", strerror(errno));
  cr_expect(list(g_mnt) == (std::set<std::string>{".", ".."}));
  cr_expect(wait_regions(0), "%llu regions left with no files",
            static_cast<unsigned long long>(pod_regions()));
}

Test(podfs, unlink_while_open_keeps_data_until_close) {
  Podfs& fs = mount();
  uint64_t regions_before = pod_regions();
  int fd = open_file("doomed");
  auto data = pattern(200 * kKiB, 8);
  write_at(fd, 0, data);
  cr_expect_eq(pod_regions(), regions_before + kPods);
  cr_assert_eq(::unlink(path("doomed").c_str()), 0);
  struct stat st {};
  cr_expect_eq(::stat(path("doomed").c_str(), &st), -1);
  cr_expect(list(g_mnt) == (std::set<std::string>{".", ".."}));
  // Still readable and writable through the open descriptor, from the pods too.
  cr_assert(fs.drop_cache().has_value());
  cr_expect(read_at(fd, 0, 200 * kKiB) == data, "an unlinked open file lost its data");
  write_at(fd, 300 * kKiB, pattern(4096, 9));
  cr_expect(read_at(fd, 300 * kKiB, 4096) == pattern(4096, 9));
  cr_expect_eq(pod_regions(), regions_before + kPods, "regions freed while the file is open");
  ::close(fd);
  cr_expect(wait_regions(regions_before), "regions not freed after close: %llu, want %llu",
            static_cast<unsigned long long>(pod_regions()),
            static_cast<unsigned long long>(regions_before));
  cr_expect_eq(pod_pages(), 0u, "pages of the deleted file are still held");
  cr_expect_eq(fs.stats().files, 0u);
}

Test(podfs, full_pods_answer_enospc) {
  mount();
  int fd = open_file("big");
  auto chunk = pattern(kMiB, 10);
  uint64_t offset = 0;
  int err = 0;
  while (offset < 3 * kPods * kPodCapacity) {
    ssize_t n = ::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(offset));
    if (n < 0) {
      err = errno;
      break;
    }
    offset += static_cast<uint64_t>(n);
  }
  cr_assert_neq(err, 0, "wrote %llu bytes to %llu bytes of pods",
                static_cast<unsigned long long>(offset),
                static_cast<unsigned long long>(kPods * kPodCapacity));
  cr_expect_eq(err, ENOSPC, "%s", strerror(err));
  cr_expect_leq(offset, kPods * kPodCapacity);
  ::close(fd);
  // Deleting the file gives the space back.
  cr_assert_eq(::unlink(path("big").c_str()), 0);
  cr_assert(wait_regions(0));
  fd = open_file("after");
  write_at(fd, 0, chunk);
  cr_expect(read_at(fd, 0, kMiB) == chunk);
  ::close(fd);
}

Test(podfs, unmount_removes_the_mount_and_the_regions) {
  mount();
  int fd = open_file("left-behind");
  write_at(fd, 0, pattern(64 * kKiB, 11));
  ::close(fd);
  cr_assert_eq(::mkdir(path("d").c_str(), 0755), 0);
  cr_expect_gt(pod_regions(), 0u);
  auto start = std::chrono::steady_clock::now();
  g_fs.reset();
  auto took = std::chrono::steady_clock::now() - start;
  cr_expect(!mounted(g_mnt), "%s still in /proc/mounts after ~Podfs", g_mnt.c_str());
  cr_expect(took < 5s, "unmount took %lld ms",
            static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  cr_expect_eq(pod_regions(), 0u, "regions of files present at unmount were not deleted");
  cr_expect_eq(pod_pages(), 0u);
  // The mountpoint is an empty directory again.
  cr_expect(std::filesystem::is_empty(g_mnt));
}

Test(podfs, recording_lists_first_touched_chunks_in_order) {
  Podfs& fs = mount();
  auto data = written_file(fs, "ram", 12 * kMiB + 4 * kKiB, 21);
  cr_expect(fails_with(fs.record_reads("nothing", 1s), ErrorCode::kNotFound));
  cr_expect(fails_with(fs.recorded_reads("ram"), ErrorCode::kNotFound));
  cr_expect(fails_with(fs.record_reads("ram", 0ms), ErrorCode::kInvalidArgument));

  constexpr auto kWindow = 4s;
  auto started = std::chrono::steady_clock::now();
  cr_assert(fs.record_reads("ram", kWindow).has_value());
  cr_expect(fails_with(fs.record_reads("ram", kWindow), ErrorCode::kWrongState));
  uint64_t reads_before = fs.stats().reads;
  // Unaligned, chunk-straddling and repeated touches.
  std::vector<ReadExtent> touches = {
      {5 * kMiB, kMiB},
      {2 * kMiB, kMiB / 2},
      {9 * kMiB + 100, 4 * kKiB},
      {7 * kMiB + kMiB / 2, kMiB},  // chunks 7 and 8
      {2 * kMiB + kMiB / 2, kMiB / 2},  // chunk 2 again
      {0, 4 * kKiB},
      {12 * kMiB, 4 * kKiB},  // the short last chunk
  };
  cr_assert_eq(read_on_other_thread("ram", touches, data), 0);
  cr_assert_lt(std::chrono::steady_clock::now() - started, kWindow, "the reads outlasted the window");
  cr_expect_geq(fs.stats().reads - reads_before, touches.size(), "the reads did not all reach podfs");

  std::vector<ReadExtent> want = chunks({5, 2, 9, 7, 8, 0});
  want.push_back(ReadExtent{12 * kMiB, 4 * kKiB});
  auto recorded = fs.recorded_reads("ram");
  cr_assert(recorded.has_value());
  cr_expect(recorded->extents == want, "recorded %s, want %s", extents_text(recorded->extents).c_str(),
            extents_text(want).c_str());
  cr_expect(!recorded->done, "done before the window is over");

  cr_assert(wait_until([&] { return fs.recorded_reads("ram")->done; }, kWindow + 5s),
            "the recording never finished");
  reads_before = fs.stats().reads;
  cr_assert_eq(read_on_other_thread("ram", chunks({11}), data), 0);
  cr_expect_gt(fs.stats().reads, reads_before);
  auto after = fs.recorded_reads("ram");
  cr_expect(after->done);
  cr_expect(after->extents == want, "a READ after the window was recorded: %s",
            extents_text(after->extents).c_str());
}

Test(podfs, prefetch_fills_the_cache_ahead_of_reads) {
  Podfs& fs = mount();
  auto data = written_file(fs, "ram", 12 * kMiB, 22);
  cr_expect(fails_with(fs.prefetch("nothing", chunks({1})), ErrorCode::kNotFound));
  // Chunk 0 first: a plain read there makes the kernel read ahead into
  // chunk 1 at once.
  std::vector<ReadExtent> extents = chunks({0, 3, 7, 4});
  extents.push_back(ReadExtent{10 * kMiB + 4 * kKiB, 8 * kKiB});  // part of a chunk
  cr_assert(fs.prefetch("ram", extents).has_value());
  cr_assert(wait_until([&] { return prefetch_ended(fs, extents.size()); }), "prefetch never ended");
  PodfsStats s = fs.stats();
  cr_expect_eq(s.prefetch_extents, extents.size());
  cr_expect_eq(s.prefetch_abandoned, 0u);
  cr_expect_eq(s.prefetch_skipped, 0u);
  cr_expect_eq(s.prefetched_bytes, 4 * kMiB + 8 * kKiB, "prefetched %llu bytes",
               static_cast<unsigned long long>(s.prefetched_bytes));

  int fd = open_file("ram", O_RDONLY);
  for (const ReadExtent& e : extents) {
    cr_expect_eq(cached_pages(fd, e.offset, e.length), pages(e.length), "extent %llu+%llu not cached",
                 static_cast<unsigned long long>(e.offset), static_cast<unsigned long long>(e.length));
  }
  // Only the extents: nothing read ahead past them.
  for (uint64_t chunk : {1, 2, 5, 8, 11}) {
    cr_expect_eq(cached_pages(fd, chunk * kMiB, kMiB), 0u, "chunk %llu cached too",
                 static_cast<unsigned long long>(chunk));
  }
  cr_expect_eq(cached_pages(fd, 10 * kMiB, kMiB), pages(8 * kKiB));

  uint64_t reads = s.reads, from_pods = pod_reads();
  for (const ReadExtent& e : extents) {
    auto got = read_at(fd, e.offset, e.length);
    cr_expect(std::equal(got.begin(), got.end(), data.begin() + static_cast<long>(e.offset)) &&
                  got.size() == e.length,
              "extent %llu+%llu reads back wrong", static_cast<unsigned long long>(e.offset),
              static_cast<unsigned long long>(e.length));
  }
  cr_expect_eq(fs.stats().reads, reads, "reading prefetched extents went to podfs");
  cr_expect_eq(pod_reads(), from_pods);

  // Prefetched again, they are all in the cache already.
  cr_assert(fs.prefetch("ram", extents).has_value());
  cr_assert(wait_until([&] { return prefetch_ended(fs, 2 * extents.size()); }));
  s = fs.stats();
  cr_expect_eq(s.prefetch_skipped, extents.size());
  cr_expect_eq(s.prefetched_bytes, 4 * kMiB + 8 * kKiB);
  cr_expect_eq(s.reads, reads);
  ::close(fd);
}

Test(podfs, prefetch_leaves_cached_pages_alone) {
  Podfs& fs = mount();
  auto data = written_file(fs, "ram", 4 * kMiB, 31);
  int fd = open_file("ram", O_RDWR);
  const uint64_t page = kMiB + 8 * kKiB;
  auto written = pattern(4 * kKiB, 32);
  write_at(fd, page, written);
  cr_assert_eq(cached_pages(fd, kMiB, kMiB), 1u, "the written page is not the only cached one");
  // Make the memory pods lag the cache, as they do for a page the guest
  // dirtied and the kernel has not written back yet: a prefetch that stored
  // the pods' copy into the cache would now lose the write.
  auto regions = fs.file_regions("ram");
  cr_assert(regions.has_value());
  auto layout = StripeLayout::create(kPods, kStripe);
  cr_assert(layout.has_value());
  auto stale = pattern(4 * kKiB, 33);
  for (const StripeExtent& e : layout->map(page, stale.size())) {
    const pods::RegionHandle& region = regions->regions[e.pod];
    auto bytes = std::as_bytes(std::span(stale)).subspan(e.file_offset - page, e.length);
    cr_assert(g_pods[e.pod]->store().write(region.id, region.token, e.pod_offset, bytes).has_value());
  }

  cr_assert(fs.prefetch("ram", chunks({1})).has_value());
  cr_assert(wait_until([&] { return prefetch_ended(fs, 1); }));
  PodfsStats s = fs.stats();
  cr_expect_eq(s.prefetch_extents, 1u);
  cr_expect_eq(s.prefetched_bytes, kMiB - 4 * kKiB, "the cached page was READ again");
  cr_expect_eq(cached_pages(fd, kMiB, kMiB), pages(kMiB));
  cr_expect(read_at(fd, page, 4 * kKiB) == written, "the prefetch overwrote a cached page");
  auto chunk = read_at(fd, kMiB, kMiB);
  std::copy(written.begin(), written.end(), data.begin() + static_cast<long>(page));
  cr_expect(std::equal(chunk.begin(), chunk.end(), data.begin() + static_cast<long>(kMiB)),
            "the rest of the chunk reads back wrong");
  ::close(fd);
}

Test(podfs, prefetch_reads_are_not_recorded) {
  Podfs& fs = mount();
  auto data = written_file(fs, "ram", 12 * kMiB, 41);
  cr_assert(fs.record_reads("ram", 30s).has_value());
  auto prefetched = chunks({1, 3, 5, 7, 9});
  cr_assert(fs.prefetch("ram", prefetched).has_value());
  // The guest's reads, while the prefetch runs.
  auto touched = chunks({8, 2, 10});
  cr_assert_eq(read_on_other_thread("ram", touched, data), 0);
  cr_assert(wait_until([&] { return prefetch_ended(fs, prefetched.size()); }));
  PodfsStats s = fs.stats();
  cr_expect_eq(s.prefetch_extents, prefetched.size());
  cr_expect_eq(s.prefetched_bytes, 5 * kMiB, "the guest's READs counted as prefetched, or not all of "
               "the prefetch's: %llu", static_cast<unsigned long long>(s.prefetched_bytes));
  auto recorded = fs.recorded_reads("ram");
  cr_assert(recorded.has_value());
  cr_expect(recorded->extents == touched, "recorded %s", extents_text(recorded->extents).c_str());
}

Test(podfs, prefetch_stops_at_the_cache_bound) {
  constexpr uint64_t kLimit = 4 * kMiB;
  Podfs& fs = mount(kLimit);
  written_file(fs, "ram", 16 * kMiB, 51);
  std::vector<ReadExtent> extents;
  for (uint64_t i = 0; i < 16; ++i) extents.push_back(ReadExtent{i * kMiB, kMiB});
  cr_assert(fs.prefetch("ram", extents).has_value());
  cr_assert(wait_until([&] { return prefetch_ended(fs, extents.size()); }), "prefetch never ended");
  PodfsStats s = fs.stats();
  // It takes the bound to the byte: it counts what it is reading, and
  // reads nothing past its extents.
  cr_expect_eq(s.prefetched_bytes, kLimit, "prefetched %llu bytes",
               static_cast<unsigned long long>(s.prefetched_bytes));
  cr_expect_eq(s.prefetch_extents, kLimit / kMiB);
  cr_expect_eq(s.prefetch_abandoned, extents.size() - kLimit / kMiB);
  cr_expect_leq(s.cached_bytes, kLimit);
  cr_expect_eq(s.evictions, 0u, "the prefetch pushed chunks out");
  int fd = open_file("ram", O_RDONLY);
  cr_expect_leq(cached_pages(fd, 0, 16 * kMiB), pages(kLimit));
  ::close(fd);
}

Test(podfs, unlink_stops_a_prefetch) {
  Podfs& fs = mount();
  uint64_t regions = pod_regions();
  written_file(fs, "ram", 24 * kMiB, 61);
  std::vector<ReadExtent> extents;
  for (uint64_t i = 0; i < 24; ++i) extents.push_back(ReadExtent{i * kMiB, kMiB});
  cr_assert(fs.prefetch("ram", extents).has_value());
  cr_assert(wait_until([&] { return fs.stats().prefetch_extents >= 1; }));
  cr_assert_eq(::unlink(path("ram").c_str()), 0, "%s", strerror(errno));
  cr_assert(wait_until([&] { return prefetch_ended(fs, extents.size()); }), "prefetch never ended");
  cr_expect_gt(fs.stats().prefetch_abandoned, 0u, "the prefetch went on after the unlink");
  // It let go of the file: its regions are gone.
  cr_expect(wait_regions(regions), "%llu regions left",
            static_cast<unsigned long long>(pod_regions()));
}

Test(podfs, unmount_during_a_prefetch_returns_promptly) {
  Podfs& fs = mount();
  written_file(fs, "ram", 24 * kMiB, 71);
  std::vector<ReadExtent> extents;
  for (uint64_t i = 0; i < 24; ++i) extents.push_back(ReadExtent{i * kMiB, kMiB});
  cr_assert(fs.prefetch("ram", extents).has_value());
  cr_assert(wait_until([&] { return fs.stats().prefetch_extents >= 1; }));
  cr_assert(!prefetch_ended(fs, extents.size()), "the prefetch ended before the unmount");
  auto start = std::chrono::steady_clock::now();
  g_fs.reset();
  auto took = std::chrono::steady_clock::now() - start;
  cr_expect(took < 2s, "unmount took %lld ms",
            static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  cr_expect(!mounted(g_mnt));
  cr_expect_eq(pod_regions(), 0u);
}

namespace {

std::string get_xattr(const std::string& file, std::string_view name) {
  char value[4096];
  ssize_t n = ::getxattr(file.c_str(), std::string(name).c_str(), value, sizeof(value));
  cr_assert_geq(n, 0, "getxattr %s on %s: %s", std::string(name).c_str(), file.c_str(), strerror(errno));
  return std::string(value, static_cast<size_t>(n));
}

void expect_xattr(const std::string& file, std::string_view name, const char* expected) {
  std::string value = get_xattr(file, name);
  std::string attribute(name);
  cr_assert_str_eq(value.c_str(), expected, "%s on %s", attribute.c_str(), file.c_str());
}

int set_xattr(const std::string& path, const std::string& value, std::string_view name = kPlacementXattr) {
  int rc = ::setxattr(path.c_str(), std::string(name).c_str(), value.data(), value.size(), 0);
  return rc == 0 ? 0 : errno;
}

uint64_t regions_on(size_t pod) { return g_pods[pod]->store().stats().regions; }

}  // namespace

Test(podfs, a_directorys_placement_lays_out_the_files_created_below_it) {
  mount();
  expect_xattr(g_mnt, kMemoryPodsXattr, "mem0,mem1");
  cr_assert_eq(::mkdir(path("one").c_str(), 0755), 0);
  cr_assert_eq(::mkdir(path("one/below").c_str(), 0755), 0);
  cr_assert_eq(set_xattr(path("one"), "pods=mem1 stripe=8K"), 0);
  expect_xattr(path("one"), kPlacementXattr, "pods=mem1 stripe=8192");

  // A file below (two levels down) goes to mem1 only, in 8 KiB stripes.
  uint64_t mem0_before = regions_on(0), mem1_before = regions_on(1);
  int fd = open_file("one/below/ram");
  cr_assert_geq(fd, 0);
  cr_assert_eq(regions_on(0), mem0_before);
  cr_assert_eq(regions_on(1), mem1_before + 1);
  expect_xattr(path("one/below/ram"), kPlacementXattr, "pods=mem1 stripe=8192");
  cr_assert_eq(::ftruncate(fd, static_cast<off_t>(kMiB)), 0);
  auto data = pattern(256 * kKiB, 31);
  write_at(fd, 100 * kKiB, data);
  cr_assert_eq(::fsync(fd), 0);
  cr_assert(g_fs->drop_cache().has_value());
  cr_assert(read_at(fd, 100 * kKiB, data.size()) == data, "data on a one-pod layout did not round-trip");
  cr_assert_eq(g_pods[0]->store().stats().pages_held, 0u, "a page went to the pod the placement left out");
  ::close(fd);

  // Outside it: the mount's layout, every pod. Files keep their layout
  // when the placement changes; the placement is gone with removexattr.
  int other = open_file("elsewhere");
  expect_xattr(path("elsewhere"), kPlacementXattr, "pods=mem0,mem1 stripe=65536");
  ::close(other);
  cr_assert_eq(set_xattr(path("one"), "pods=2"), 0);
  expect_xattr(path("one"), kPlacementXattr, "pods=mem0,mem1 stripe=65536");
  expect_xattr(path("one/below/ram"), kPlacementXattr, "pods=mem1 stripe=8192");
  cr_assert_eq(::removexattr(path("one").c_str(), std::string(kPlacementXattr).c_str()), 0);
  char buffer[64];
  cr_assert_lt(::getxattr(path("one").c_str(), std::string(kPlacementXattr).c_str(), buffer, sizeof(buffer)), 0);
  cr_assert_eq(errno, ENODATA);

  // What cannot be: more pods than there are, a pod not here, a file's
  // layout, another attribute.
  cr_assert_eq(set_xattr(path("one"), "pods=3"), EINVAL);
  cr_assert_eq(set_xattr(path("one"), "pods=mem7"), EINVAL);
  cr_assert_eq(set_xattr(path("one"), "stripe=1000"), EINVAL);
  cr_assert_eq(set_xattr(path("one/below/ram"), "pods=1"), EPERM);
  cr_assert_neq(::setxattr(path("one").c_str(), "user.other", "x", 1, 0), 0);
  cr_assert_eq(errno, ENOTSUP);
}

Test(podfs, a_file_moves_to_another_podfs_on_its_regions) {
  mount();
  mount_other();
  cr_assert_eq(::mkdir(path("src").c_str(), 0755), 0);
  int fd = open_file("src/ram");
  cr_assert_eq(::ftruncate(fd, static_cast<off_t>(kMiB)), 0);
  auto data = pattern(300 * kKiB, 41);
  write_at(fd, 123 * kKiB, data);
  cr_assert_eq(::fsync(fd), 0);
  const uint64_t regions = pod_regions(), pages = pod_pages();

  const std::string handover = get_xattr(path("src/ram"), kRegionsXattr);
  auto parsed = parse_handover(handover);
  cr_assert(parsed.has_value(), "%s: %s", handover.c_str(), parsed ? "" : parsed.error().to_string().c_str());
  cr_assert_eq(parsed->size, kMiB);
  cr_assert_eq(parsed->stripe_bytes, kStripe);
  cr_assert_eq(parsed->pod_ids.size(), kPods);
  expect_xattr(path("src/ram"), kOwnedXattr, "yes");

  // The other podfs makes a file on those regions: the same bytes, read
  // from the memory pods, and no region more.
  const std::string dst = g_other_mnt + "/dst";
  cr_assert_eq(::mkdir(dst.c_str(), 0755), 0);
  cr_assert_eq(set_xattr(dst, "ram " + handover, kAdoptXattr), 0);
  cr_assert_eq(pod_regions(), regions);
  expect_xattr(dst + "/ram", kOwnedXattr, "no");
  int moved = ::open((dst + "/ram").c_str(), O_RDWR | O_CLOEXEC);
  cr_assert_geq(moved, 0, "open: %s", strerror(errno));
  cr_assert_eq(file_size(moved), kMiB);
  cr_assert(read_at(moved, 123 * kKiB, data.size()) == data, "the adopted file does not read the source's bytes");
  cr_assert(all_zero(read_at(moved, 0, 123 * kKiB)), "never-written bytes are not zeros");
  // A second adoption of the same name is refused.
  cr_assert_eq(set_xattr(dst, "ram " + handover, kAdoptXattr), EEXIST);

  // The source lets go: its unlink leaves the regions to the other podfs.
  cr_assert_eq(set_xattr(path("src/ram"), "no", kOwnedXattr), 0);
  ::close(fd);
  cr_assert_eq(::unlink(path("src/ram").c_str()), 0);
  cr_assert_eq(::rmdir(path("src").c_str()), 0);
  auto more = pattern(64 * kKiB, 42);
  write_at(moved, 512 * kKiB, more);
  cr_assert_eq(::fsync(moved), 0);
  cr_assert(g_other_fs->drop_cache().has_value());
  cr_assert(read_at(moved, 123 * kKiB, data.size()) == data);
  cr_assert(read_at(moved, 512 * kKiB, more.size()) == more);
  cr_assert_eq(g_fs->stats().files, 0u, "the source still has the file");
  cr_assert_eq(pod_regions(), regions, "the source's unlink freed regions it had let go");
  cr_assert_geq(pod_pages(), pages);

  // Once it owns them, its unlink frees them.
  cr_assert_eq(set_xattr(dst + "/ram", "yes", kOwnedXattr), 0);
  ::close(moved);
  cr_assert_eq(::unlink((dst + "/ram").c_str()), 0);
  cr_assert(wait_regions(regions - kPods), "the adopted file's regions were not freed: %llu",
            static_cast<unsigned long long>(pod_regions()));
  cr_assert_eq(pod_pages(), 0u);
}

Test(podfs, an_adoption_that_cannot_be_makes_no_file) {
  mount(0, true);
  int fd = open_file("ram");
  cr_assert_eq(::ftruncate(fd, static_cast<off_t>(kMiB)), 0);
  ::close(fd);
  auto handover = parse_handover(get_xattr(path("ram"), kRegionsXattr));
  cr_assert(handover.has_value());
  const uint64_t regions = pod_regions();
  cr_assert_eq(::mkdir(path("dir").c_str(), 0755), 0);

  FileHandover wrong_token = *handover;
  wrong_token.regions[1].token[0] ^= 1;
  FileHandover unknown_pod = *handover;
  unknown_pod.pod_ids[0] = "mem9";
  FileHandover unknown_region = *handover;
  unknown_region.regions[0].id += 1000;
  for (const FileHandover* bad : {&wrong_token, &unknown_pod, &unknown_region}) {
    cr_assert_neq(set_xattr(path("dir"), "ram " + format_handover(*bad), kAdoptXattr), 0);
  }
  for (const char* malformed : {"", "ram", "ram size=1", "../ram size=4096 stripe=4K regions=mem0:1:00",
                                "ram size=4096 stripe=4K regions=mem0:1:zz"}) {
    cr_assert_eq(set_xattr(path("dir"), malformed, kAdoptXattr), EINVAL, "'%s' was taken", malformed);
  }
  cr_assert_eq(set_xattr(path("ram"), "x " + format_handover(*handover), kAdoptXattr), ENOENT,
               "a file is not a directory to adopt into");
  cr_assert_eq(set_xattr(path("ram"), "maybe", kOwnedXattr), EINVAL);
  cr_assert_eq(set_xattr(path("dir"), "no", kOwnedXattr), EPERM);
  cr_assert_eq(pod_regions(), regions);
  cr_assert(list(path("dir")) == (std::set<std::string>{".", ".."}), "a refused adoption left a file");

  // The tokens are root's: another user that may read the file may not
  // read its regions.
  cr_assert_eq(::chmod(g_dir.c_str(), 0755), 0);
  pid_t child = ::fork();
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    char value[4096];
    if (::getxattr(path("ram").c_str(), std::string(kRegionsXattr).c_str(), value, sizeof(value)) >= 0) ::_exit(11);
    if (errno != EACCES) ::_exit(12);
    if (::getxattr(path("ram").c_str(), std::string(kOwnedXattr).c_str(), value, sizeof(value)) < 0) ::_exit(13);
    ::_exit(0);
  }
  int status = 0;
  cr_assert_eq(::waitpid(child, &status, 0), child);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "as nobody: exit %d", WEXITSTATUS(status));
}
