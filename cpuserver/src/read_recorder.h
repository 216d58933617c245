// The working set of a guest's first seconds: which chunks of a podfs file
// its READs touched during a window, in first-touch order, in the cache's
// 1 MiB chunks (QEMU's READs are 1 MiB). A later restore of the same
// snapshot prefetches them in that order.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_set>

#include <vmpod/cpuserver/podfs.h>

namespace vmpod::cpuserver {

class ReadRecorder {
 public:
  // Records the READs of file `ino`, known as `name`, for `window`; a
  // finished recording of the same name is replaced.
  Status start(const std::string& name, uint64_t ino, std::chrono::milliseconds window);
  // A READ of [offset, offset + length) of `ino`, a file of `file_size`
  // bytes, arrived.
  void saw_read(uint64_t ino, uint64_t offset, uint64_t length, uint64_t file_size);
  Result<ReadRecording> recording(const std::string& name) const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Recording {
    uint64_t ino = 0;
    Clock::time_point until;
    std::vector<ReadExtent> extents;
    std::unordered_set<uint64_t> chunks;  // those in `extents`
  };

  mutable std::mutex mutex_;
  std::map<std::string, Recording> recordings_;
  // The latest end of any window, so that READs outside every window do
  // not take the lock.
  std::atomic<Clock::rep> any_until_{0};
};

}  // namespace vmpod::cpuserver
