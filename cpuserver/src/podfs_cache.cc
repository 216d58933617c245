#include <vmpod/cpuserver/podfs_cache.h>

#include <algorithm>

namespace vmpod::cpuserver {

PodfsCache::PodfsCache(uint64_t limit_bytes) : limit_(limit_bytes) {}

void PodfsCache::fetched(uint64_t ino, uint64_t offset, uint64_t length) {
  std::lock_guard lock(mutex_);
  uint64_t end = offset + length;
  for (uint64_t position = offset; position < end;) {
    uint64_t chunk = position / kChunkBytes;
    uint64_t piece = std::min((chunk + 1) * kChunkBytes, end) - position;
    auto it = index_.find(Key{ino, chunk});
    if (it == index_.end()) {
      fifo_.push_back(Entry{Key{ino, chunk}, piece});
      index_.emplace(Key{ino, chunk}, std::prev(fifo_.end()));
      cached_ += piece;
    } else {
      // A chunk READ again was partly cached, or evicted by the kernel on
      // its own; cap the account at the chunk's size.
      uint64_t grown = std::min(kChunkBytes, it->second->bytes + piece);
      cached_ += grown - it->second->bytes;
      it->second->bytes = grown;
    }
    position += piece;
  }
}

bool PodfsCache::over_limit() const {
  std::lock_guard lock(mutex_);
  return limit_ != 0 && cached_ > limit_;
}

std::vector<CacheChunk> PodfsCache::take_evictions() {
  std::lock_guard lock(mutex_);
  std::vector<CacheChunk> out;
  if (limit_ == 0 || cached_ <= limit_) return out;
  uint64_t low_water = limit_ - limit_ / 10;
  while (cached_ > low_water && !fifo_.empty()) {
    const Entry& oldest = fifo_.front();
    out.push_back(CacheChunk{oldest.key.ino, oldest.key.chunk * kChunkBytes, kChunkBytes});
    cached_ -= oldest.bytes;
    index_.erase(oldest.key);
    fifo_.pop_front();
  }
  return out;
}

void PodfsCache::forget(uint64_t ino) {
  std::lock_guard lock(mutex_);
  for (auto it = fifo_.begin(); it != fifo_.end();) {
    if (it->key.ino != ino) {
      ++it;
      continue;
    }
    cached_ -= it->bytes;
    index_.erase(it->key);
    it = fifo_.erase(it);
  }
}

void PodfsCache::clear() {
  std::lock_guard lock(mutex_);
  fifo_.clear();
  index_.clear();
  cached_ = 0;
}

uint64_t PodfsCache::cached_bytes() const {
  std::lock_guard lock(mutex_);
  return cached_;
}

}  // namespace vmpod::cpuserver
