// podfs: a FUSE filesystem whose regular files are regions striped over
// memory pods. QEMU maps a podfs file as guest RAM; the kernel's page cache
// is the compute pod's cache, filled by READ and written back by WRITE.
//
// Never map a podfs file inside the process that serves it: munmap of a
// dirty mapping waits for WRITEs that this process's own workers must
// answer (see shared/FACTS.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/net/fabric.h>
#include <vmpod/net/socket.h>
#include <vmpod/pods/memory_client.h>

namespace vmpod::cpuserver {

struct PodfsConfig {
  std::string mountpoint;
  std::vector<net::SocketAddress> memory_pods;  // every file is striped over all of them
  // Clients of those pods, in that order, connected already and shared with
  // other mounts (a compute pod's guests); empty: podfs connects its own.
  // Connecting sets up a fabric endpoint per pod, which a clone should not
  // wait for.
  std::vector<std::shared_ptr<pods::MemoryPodClient>> connected_pods;
  net::FabricConfig fabric;
  uint64_t stripe_bytes = 1u << 20;
  uint64_t local_cache_bytes = 0;  // 0: the host may cache all of it
  bool allow_other = false;        // needed when QEMU runs as another user (libvirt)
  std::string owner = "podfs";     // recorded with every region it creates
  unsigned max_threads = 32;
  // The FUSE floor for benchmarks: no memory pods, every READ answered with
  // zeros and every WRITE dropped, without touching any network.
  bool null_store = false;
};

// A file's regions, one per memory pod in the podfs's order, and its size:
// what a compute pod hands over when a guest moves to another one.
struct FileRegions {
  uint64_t size = 0;
  std::vector<pods::RegionHandle> regions;
};

struct PodfsStats {
  uint64_t files = 0;
  uint64_t reads = 0;           // READ requests served (page-ins)
  uint64_t bytes_read = 0;
  uint64_t writes = 0;          // WRITE requests served (write-backs)
  uint64_t bytes_written = 0;
  uint64_t zero_reads = 0;      // READs answered without the network
  uint64_t evictions = 0;       // chunks dropped to stay under the limit
  uint64_t bytes_evicted = 0;
  uint64_t cached_bytes = 0;    // fetched and not yet dropped
  uint64_t cache_limit = 0;
  uint64_t io_errors = 0;
  std::vector<uint64_t> read_latency;  // LatencyHistogram buckets
  std::vector<uint64_t> write_latency;
  // The prefetch's share of the READs above, and its extents: finished
  // (fetched, or found cached: skipped) and abandoned (the file went, the
  // cache bound was reached, or a read failed).
  uint64_t prefetched_bytes = 0;
  uint64_t prefetch_extents = 0;
  uint64_t prefetch_skipped = 0;
  uint64_t prefetch_abandoned = 0;
};

// A byte range of a file.
struct ReadExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const ReadExtent&) const = default;
};

struct ReadRecording {
  std::vector<ReadExtent> extents;
  bool done = false;  // the window is over: nothing more will be added
};

class Podfs {
 public:
  // Connects to every memory pod, mounts, and serves on its own threads.
  static Result<std::unique_ptr<Podfs>> mount(const PodfsConfig& config);
  // Unmounts (lazily, if a file is still in use) and deletes the regions of
  // every file still present.
  ~Podfs();

  const std::string& mountpoint() const;

  // Writes back every dirty cached page and drops every cached page of
  // every file, so the memory pods hold the only copy.
  Status drop_cache();
  PodfsStats stats() const;
  // Each memory pod's counters, with region_pages counting this podfs's files.
  Result<std::vector<pods::MemoryPodStats>> memory_pod_stats() const;
  // Set once a memory pod is lost: the reason, for the vmm to report.
  std::optional<std::string> failure() const;
  // The files, as paths under the mount, with a region on a memory pod
  // that is lost: a mount shared by many guests fails only theirs.
  std::vector<std::string> files_on_lost_pods() const;

  // The regions behind the file `name` in the root directory.
  Result<FileRegions> file_regions(const std::string& name) const;
  // Creates the file `name` in the root directory on regions that already
  // exist, laid out by the same memory pods and stripe (a guest moving in).
  // Any page of it may hold data, so every READ goes to the memory pods.
  Status adopt_file(const std::string& name, const FileRegions& file);
  // From now on no file's regions are deleted, by unlink or unmount:
  // another podfs has taken them over.
  void disown_regions();

  // The working set of a restore. Records, for `window`, the READs of the
  // file `name` in the root directory: the 1 MiB-aligned chunks they
  // touched, each once, in the order first touched. READs caused by this
  // podfs's own prefetch are not recorded. kWrongState while a recording
  // of `name` runs; a finished one is replaced.
  Status record_reads(const std::string& name, std::chrono::milliseconds window);
  // What has been recorded for `name` so far.
  Result<ReadRecording> recorded_reads(const std::string& name) const;
  // Returns at once and reads the extents of `name` in the background, in
  // order, into the kernel's page cache ahead of the guest. Pages already
  // cached (dirty ones included) are left as they are. Stops early when
  // the file is removed, podfs unmounts, or the cache would pass
  // PodfsConfig::local_cache_bytes.
  Status prefetch(const std::string& name, std::vector<ReadExtent> extents);

 private:
  struct Impl;
  explicit Podfs(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Writes the dirty cached pages of a podfs file (the guest's, through a
// mapping, too) back to the memory pods, from any process but the one
// serving the mount (see above).
Status write_back(const std::string& file);

}  // namespace vmpod::cpuserver
