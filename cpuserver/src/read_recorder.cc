#include "read_recorder.h"

#include <algorithm>

#include <fmt/format.h>

#include <vmpod/cpuserver/podfs_cache.h>

namespace vmpod::cpuserver {

Status ReadRecorder::start(const std::string& name, uint64_t ino, std::chrono::milliseconds window) {
  if (window.count() <= 0) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("podfs: recording window of {} ms", window.count()));
  }
  std::lock_guard lock(mutex_);
  auto now = Clock::now();
  auto running = recordings_.find(name);
  if (running != recordings_.end() && now < running->second.until) {
    return fail(ErrorCode::kWrongState, "podfs: the READs of '" + name + "' are being recorded already");
  }
  recordings_[name] = Recording{ino, now + window, {}, {}};
  any_until_.store(std::max(any_until_.load(), (now + window).time_since_epoch().count()));
  return {};
}

void ReadRecorder::saw_read(uint64_t ino, uint64_t offset, uint64_t length, uint64_t file_size) {
  if (Clock::now().time_since_epoch().count() >= any_until_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mutex_);
  // Checked under the lock that recording() takes: once it has said a
  // recording is done, nothing more is added to it.
  auto now = Clock::now();
  for (auto& [name, recording] : recordings_) {
    if (recording.ino != ino || now >= recording.until) continue;
    constexpr uint64_t kChunk = PodfsCache::kChunkBytes;
    for (uint64_t chunk = offset / kChunk; chunk * kChunk < offset + length; ++chunk) {
      if (!recording.chunks.insert(chunk).second) continue;
      uint64_t start = chunk * kChunk;
      recording.extents.push_back(ReadExtent{start, std::min(kChunk, file_size - start)});
    }
  }
}

Result<ReadRecording> ReadRecorder::recording(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = recordings_.find(name);
  if (it == recordings_.end()) {
    return fail(ErrorCode::kNotFound, "podfs: the READs of '" + name + "' were never recorded");
  }
  return ReadRecording{it->second.extents, Clock::now() >= it->second.until};
}

}  // namespace vmpod::cpuserver
