// The local cache bound of a compute pod. Every page of guest RAM that the
// host caches was first fetched by a podfs READ (even a first write READs
// the page), so podfs accounts cached bytes by what it fetched, in 1 MiB
// chunks, and evicts chunks once over the limit. The kernel, told to drop a
// chunk, writes its dirty pages back first.
//
// podfs never sees hits on cached pages, only misses, so the policy is 2Q
// on misses: a chunk fetched for the first time is on probation; a chunk
// fetched again soon after its eviction (it is in the ghost list) is hot
// and goes to the protected list. Probation is evicted first, so a guest
// scanning a large buffer does not push its kernel's pages out.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace vmpod::cpuserver {

struct CacheChunk {
  uint64_t ino = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const CacheChunk&) const = default;
};

class PodfsCache {
 public:
  static constexpr uint64_t kChunkBytes = 1u << 20;

  // limit_bytes 0: no bound, nothing is ever chosen for eviction.
  explicit PodfsCache(uint64_t limit_bytes);

  // A READ of [offset, offset + length) of file `ino` was served.
  void fetched(uint64_t ino, uint64_t offset, uint64_t length);
  // Takes the chunks to drop, oldest fetched first, until the accounted
  // bytes are back under the low-water mark (90% of the limit).
  std::vector<CacheChunk> take_evictions();
  bool over_limit() const;
  // The file is gone, or its cache was dropped.
  void forget(uint64_t ino);
  void clear();

  uint64_t limit_bytes() const { return limit_; }
  uint64_t cached_bytes() const;

 private:
  struct Key {
    uint64_t ino;
    uint64_t chunk;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& key) const { return key.ino * 0x9e3779b97f4a7c15ull ^ key.chunk; }
  };
  struct Entry {
    Key key;
    uint64_t bytes;
    bool hot;
  };
  using List = std::list<Entry>;

  void evict_front(List& list, std::vector<CacheChunk>& out);
  void remember_evicted(const Key& key);

  const uint64_t limit_;
  mutable std::mutex mutex_;
  List probation_;  // oldest first
  List protected_;  // oldest first
  uint64_t protected_bytes_ = 0;
  std::unordered_map<Key, List::iterator, KeyHash> index_;
  std::list<Key> ghosts_;  // recently evicted, oldest first
  std::unordered_map<Key, std::list<Key>::iterator, KeyHash> ghost_index_;
  uint64_t cached_ = 0;
};

}  // namespace vmpod::cpuserver
