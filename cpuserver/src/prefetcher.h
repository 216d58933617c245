// Brings extents of podfs files into the kernel's page cache ahead of the
// guest, by reading the files through the mount like any other reader.
//
// Not by fuse_lowlevel_notify_store: that overwrites cached pages, dirty
// ones too, so a prefetch racing a guest write would undo the write. A
// pread makes the kernel READ only the pages it does not hold, and leaves
// cached and dirty ones alone. The reads run on the prefetcher's own
// threads, never on a FUSE worker (whose READs they wait for) and never
// through a mapping (see podfs.h).
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/cpuserver/podfs.h>
#include <vmpod/cpuserver/podfs_cache.h>

namespace vmpod::cpuserver {

class Prefetcher {
 public:
  // Each thread waits for the READs of one pread (at most 1 MiB, one READ
  // unless cached pages split it) before the next, so the prefetch keeps
  // about this many of the session's workers busy, no more.
  static constexpr unsigned kThreads = 2;

  // Reads files under `mountpoint`; stops a prefetch once `cache` would
  // pass its limit, or once `linked(ino)` says the file lost its name.
  Prefetcher(std::string mountpoint, PodfsCache& cache, std::function<bool(uint64_t ino)> linked);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Queues the extents of file `ino`, named `name` in the mount's root;
  // they are read in order, kThreads at a time.
  void add(const std::string& name, uint64_t ino, std::vector<ReadExtent> extents);
  // Whether a READ request from thread `tid` comes from a prefetch...
  bool issued_by(pid_t tid) const;
  // ...and, once it was served, what it brought in; this accounts it in
  // the cache (instead of podfs) together with the room it had reserved,
  // so that the bound check never counts those bytes twice or not at all.
  void fetched(pid_t tid, uint64_t ino, uint64_t offset, uint64_t length);
  // Ends every prefetch and joins the threads. A READ they wait for ends
  // within the memory pods' I/O timeout, so this does not hang.
  void stop();

  struct Counters {
    uint64_t bytes = 0;      // READs the prefetch caused
    uint64_t extents = 0;    // finished, fetched or found cached
    uint64_t skipped = 0;    // finished without a READ: cached already
    uint64_t abandoned = 0;  // not finished: file removed, cache limit, unmount, error
  };
  Counters counters() const;

 private:
  struct Job;
  struct Worker {
    std::atomic<pid_t> tid{0};
    std::atomic<uint64_t> bytes{0};  // READs served for this thread
    uint64_t reserved = 0;           // under mutex_: room for its pread, not yet fetched
    std::thread thread;
  };
  struct Taken {
    std::shared_ptr<Job> job;
    size_t index = 0;
  };

  void run(Worker& worker);
  void open(Job& job);
  Taken take();
  // Whether `worker` may read `length` more bytes of `job` now; if not,
  // the job stops, with the reason.
  bool reserve(Worker& worker, Job& job, uint64_t length);
  // The pread is over: what it did not fetch needs no room.
  void release(Worker& worker);
  void stop_job(Job& job, std::string reason);
  void stop_locked(Job& job, std::string reason);
  // An extent of `job` is over: `done` if all of it is in the cache now,
  // `bytes` the READs it caused.
  void finish(Job& job, bool done, uint64_t bytes);
  // Counts and logs a job with no extent left to take or in flight.
  void end(const Job& job);

  const std::string mountpoint_;
  PodfsCache& cache_;
  const std::function<bool(uint64_t)> linked_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::deque<std::shared_ptr<Job>> queue_;  // jobs with extents not yet taken, in arrival order
  uint64_t reserved_ = 0;                   // the workers' reserved, summed
  uint64_t extents_ = 0, skipped_ = 0, abandoned_ = 0;
  std::array<Worker, kThreads> workers_;
};

}  // namespace vmpod::cpuserver
