#include <vmpod/cpuserver/podfs_cache.h>

#include <algorithm>

namespace vmpod::cpuserver {

namespace {

// At most this share of the cache is protected: probation always has room
// for new chunks to prove themselves.
constexpr uint64_t kProtectedPercent = 75;

}  // namespace

PodfsCache::PodfsCache(uint64_t limit_bytes) : limit_(limit_bytes) {}

void PodfsCache::fetched(uint64_t ino, uint64_t offset, uint64_t length) {
  std::lock_guard lock(mutex_);
  uint64_t end = offset + length;
  for (uint64_t position = offset; position < end;) {
    uint64_t chunk = position / kChunkBytes;
    uint64_t piece = std::min((chunk + 1) * kChunkBytes, end) - position;
    Key key{ino, chunk};
    auto it = index_.find(key);
    if (it != index_.end()) {
      // A chunk READ again was partly cached, or dropped by the kernel on
      // its own; cap the account at the chunk's size.
      uint64_t grown = std::min(kChunkBytes, it->second->bytes + piece);
      cached_ += grown - it->second->bytes;
      if (it->second->hot) protected_bytes_ += grown - it->second->bytes;
      it->second->bytes = grown;
    } else {
      auto ghost = ghost_index_.find(key);
      bool hot = ghost != ghost_index_.end();
      if (hot) {
        ghosts_.erase(ghost->second);
        ghost_index_.erase(ghost);
      }
      List& list = hot ? protected_ : probation_;
      list.push_back(Entry{key, piece, hot});
      index_.emplace(key, std::prev(list.end()));
      cached_ += piece;
      if (hot) protected_bytes_ += piece;
    }
    position += piece;
  }
}

bool PodfsCache::over_limit() const {
  std::lock_guard lock(mutex_);
  return limit_ != 0 && cached_ > limit_;
}

void PodfsCache::remember_evicted(const Key& key) {
  ghosts_.push_back(key);
  ghost_index_.emplace(key, std::prev(ghosts_.end()));
  // Remember about as many chunks as the cache holds.
  while (ghosts_.size() > limit_ / kChunkBytes + 1) {
    ghost_index_.erase(ghosts_.front());
    ghosts_.pop_front();
  }
}

void PodfsCache::evict_front(List& list, std::vector<CacheChunk>& out) {
  const Entry& oldest = list.front();
  out.push_back(CacheChunk{oldest.key.ino, oldest.key.chunk * kChunkBytes, kChunkBytes});
  cached_ -= oldest.bytes;
  if (oldest.hot) protected_bytes_ -= oldest.bytes;
  remember_evicted(oldest.key);
  index_.erase(oldest.key);
  list.pop_front();
}

std::vector<CacheChunk> PodfsCache::take_evictions() {
  std::lock_guard lock(mutex_);
  std::vector<CacheChunk> out;
  if (limit_ == 0 || cached_ <= limit_) return out;
  uint64_t low_water = limit_ - limit_ / 10;
  while (cached_ > low_water && (!probation_.empty() || !protected_.empty())) {
    bool protected_too_big = protected_bytes_ > limit_ * kProtectedPercent / 100;
    evict_front(probation_.empty() || (protected_too_big && !protected_.empty()) ? protected_ : probation_, out);
  }
  return out;
}

void PodfsCache::forget(uint64_t ino) {
  std::lock_guard lock(mutex_);
  for (List* list : {&probation_, &protected_}) {
    for (auto it = list->begin(); it != list->end();) {
      if (it->key.ino != ino) {
        ++it;
        continue;
      }
      cached_ -= it->bytes;
      if (it->hot) protected_bytes_ -= it->bytes;
      index_.erase(it->key);
      it = list->erase(it);
    }
  }
  for (auto it = ghosts_.begin(); it != ghosts_.end();) {
    if (it->ino != ino) {
      ++it;
      continue;
    }
    ghost_index_.erase(*it);
    it = ghosts_.erase(it);
  }
}

void PodfsCache::clear() {
  std::lock_guard lock(mutex_);
  probation_.clear();
  protected_.clear();
  index_.clear();
  ghosts_.clear();
  ghost_index_.clear();
  cached_ = 0;
  protected_bytes_ = 0;
}

uint64_t PodfsCache::cached_bytes() const {
  std::lock_guard lock(mutex_);
  return cached_;
}

}  // namespace vmpod::cpuserver
