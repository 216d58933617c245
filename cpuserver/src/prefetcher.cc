#include "prefetcher.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include <vmpod/net/socket.h>

namespace vmpod::cpuserver {

namespace {

// One pread asks for at most what one READ carries, so that a prefetch
// checks the cache bound and whether to stop between READs.
constexpr uint64_t kPieceBytes = PodfsCache::kChunkBytes;

}  // namespace

struct Prefetcher::Job {
  std::string name;
  uint64_t ino = 0;
  std::vector<ReadExtent> extents;
  std::chrono::steady_clock::time_point started;

  // Opened by whichever thread takes the first extent, then shared.
  std::once_flag opening;
  net::Fd fd;
  std::string open_error;

  // Under the prefetcher's mutex.
  size_t next = 0;  // the first extent no thread has taken
  size_t in_flight = 0;
  size_t finished = 0;
  uint64_t bytes = 0;
  std::string stopped;  // why it ends early; empty while it does not
};

Prefetcher::Prefetcher(std::string mountpoint, PodfsCache& cache,
                       std::function<bool(uint64_t ino)> linked)
    : mountpoint_(std::move(mountpoint)), cache_(cache), linked_(std::move(linked)) {
  for (Worker& worker : workers_) worker.thread = std::thread([this, &worker] { run(worker); });
}

Prefetcher::~Prefetcher() { stop(); }

void Prefetcher::add(const std::string& name, uint64_t ino, std::vector<ReadExtent> extents) {
  if (extents.empty()) return;
  auto job = std::make_shared<Job>();
  job->name = name;
  job->ino = ino;
  job->extents = std::move(extents);
  job->started = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    queue_.push_back(std::move(job));
  }
  wake_.notify_all();
}

bool Prefetcher::issued_by(pid_t tid) const {
  for (const Worker& worker : workers_) {
    if (tid != 0 && worker.tid.load(std::memory_order_relaxed) == tid) return true;
  }
  return false;
}

void Prefetcher::fetched(pid_t tid, uint64_t ino, uint64_t offset, uint64_t length) {
  std::lock_guard lock(mutex_);
  cache_.fetched(ino, offset, length);
  for (Worker& worker : workers_) {
    if (tid == 0 || worker.tid.load(std::memory_order_relaxed) != tid) continue;
    worker.bytes.fetch_add(length);
    uint64_t used = std::min(worker.reserved, length);
    worker.reserved -= used;
    reserved_ -= used;
  }
}

void Prefetcher::stop() {
  std::deque<std::shared_ptr<Job>> untaken;  // closed outside the lock
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& job : queue_) {
      if (job->stopped.empty()) job->stopped = "podfs unmounting";
      // A job with an extent in flight ends when that extent does.
      if (job->in_flight == 0) end(*job);
    }
    untaken.swap(queue_);
  }
  wake_.notify_all();
  for (Worker& worker : workers_) {
    if (worker.thread.joinable()) worker.thread.join();
  }
}

Prefetcher::Counters Prefetcher::counters() const {
  Counters out;
  for (const Worker& worker : workers_) out.bytes += worker.bytes.load();
  std::lock_guard lock(mutex_);
  out.extents = extents_;
  out.skipped = skipped_;
  out.abandoned = abandoned_;
  return out;
}

void Prefetcher::run(Worker& worker) {
  // READs carry the tid of the thread whose read caused them: that is how
  // podfs tells this thread's READs from the guest's.
  worker.tid = ::gettid();
  pthread_setname_np(pthread_self(), "podfs-prefetch");
  std::vector<std::byte> scratch(kPieceBytes);
  for (;;) {
    Taken taken = take();
    if (!taken.job) return;
    Job& job = *taken.job;
    std::call_once(job.opening, [&] { open(job); });
    const ReadExtent& extent = job.extents[taken.index];
    uint64_t bytes_before = worker.bytes.load();
    bool done = static_cast<bool>(job.fd);
    if (!done) stop_job(job, job.open_error);
    uint64_t extent_end = extent.offset + extent.length;
    for (uint64_t position = extent.offset; done && position < extent_end;) {
      uint64_t length = std::min(kPieceBytes, extent_end - position);
      if (!reserve(worker, job, length)) {
        done = false;
        break;
      }
      ssize_t got = ::pread(job.fd.get(), scratch.data(), length, static_cast<off_t>(position));
      int err = errno;
      release(worker);
      if (got < 0) {
        stop_job(job, std::string("reading: ") + strerror(err));
        done = false;
      } else if (got == 0) {
        break;  // past the end of the file: nothing left to fetch
      } else {
        position += static_cast<uint64_t>(got);
      }
    }
    finish(job, done, worker.bytes.load() - bytes_before);
  }
}

void Prefetcher::open(Job& job) {
  std::string path = mountpoint_ + "/" + job.name;
  net::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    job.open_error = errno == ENOENT ? "file removed" : std::string("opening: ") + strerror(errno);
    return;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || st.st_ino != job.ino) {
    job.open_error = "file removed";  // and the name given to another
    return;
  }
  // Exactly the extents: readahead would READ pages past them, which the
  // guest may never touch and the cache bound did not allow for.
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
  job.fd = std::move(fd);
}

Prefetcher::Taken Prefetcher::take() {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  if (stopping_) return {};
  std::shared_ptr<Job> job = queue_.front();
  size_t index = job->next++;
  ++job->in_flight;
  if (job->next == job->extents.size()) queue_.pop_front();
  return Taken{std::move(job), index};
}

bool Prefetcher::reserve(Worker& worker, Job& job, uint64_t length) {
  bool linked = linked_(job.ino);  // takes podfs's namespace lock: not under ours
  std::lock_guard lock(mutex_);
  if (!job.stopped.empty()) return false;
  std::string reason;
  if (stopping_) {
    reason = "podfs unmounting";
  } else if (!linked) {
    reason = "file removed";
  } else if (uint64_t limit = cache_.limit_bytes();
             limit != 0 && cache_.cached_bytes() + reserved_ + length > limit) {
    // Past the bound the evictor would drop chunks, the guest's included,
    // to make room for pages the guest has not asked for yet.
    reason = "cache limit reached";
  }
  if (!reason.empty()) {
    stop_locked(job, std::move(reason));
    return false;
  }
  worker.reserved = length;
  reserved_ += length;
  return true;
}

void Prefetcher::release(Worker& worker) {
  std::lock_guard lock(mutex_);
  reserved_ -= worker.reserved;
  worker.reserved = 0;
}

void Prefetcher::stop_job(Job& job, std::string reason) {
  std::lock_guard lock(mutex_);
  stop_locked(job, std::move(reason));
}

void Prefetcher::stop_locked(Job& job, std::string reason) {
  if (!job.stopped.empty()) return;
  job.stopped = std::move(reason);
  std::erase_if(queue_, [&](const std::shared_ptr<Job>& queued) { return queued.get() == &job; });
}

void Prefetcher::finish(Job& job, bool done, uint64_t bytes) {
  std::lock_guard lock(mutex_);
  --job.in_flight;
  job.bytes += bytes;
  if (done) {
    ++job.finished;
    ++extents_;
    if (bytes == 0) ++skipped_;
  }
  if (job.in_flight == 0 && (job.next == job.extents.size() || !job.stopped.empty())) end(job);
}

void Prefetcher::end(const Job& job) {
  abandoned_ += job.extents.size() - job.finished;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  job.started);
  spdlog::info("podfs: prefetch of {}: {} of {} extents, {:.1f} MiB read, {} ms{}", job.name,
               job.finished, job.extents.size(), static_cast<double>(job.bytes) / (1u << 20),
               ms.count(), job.stopped.empty() ? "" : ", stopped: " + job.stopped);
}

}  // namespace vmpod::cpuserver
