// The memory pod's DRAM tier: regions of 4 KiB pages held in a bounded pool.
// A page never written is not stored and reads as zeros; a page written with
// zeros is dropped; a page returned to the pool is cleared before any region
// gets it again.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <vmpod/base/histogram.h>
#include <vmpod/base/result.h>
#include <vmpod/pods/memory_stats.h>
#include <vmpod/pods/page_protocol.h>

namespace vmpod::memserver {

using pods::RegionToken;

// Fixed-size 4 KiB pages carved from large anonymous mappings; the pool's
// size is the pod's capacity, so a full pod refuses writes instead of
// swapping or being killed.
class PagePool {
 public:
  explicit PagePool(uint64_t capacity_pages);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // A zeroed page, or nullptr when the pool is full.
  std::byte* allocate();
  void release(std::byte* page);

  uint64_t capacity_pages() const { return capacity_pages_; }
  uint64_t pages_in_use() const { return in_use_.load(std::memory_order_relaxed); }

 private:
  static constexpr uint64_t kSlabPages = 512;  // 2 MiB per mapping
  uint64_t capacity_pages_;
  std::atomic<uint64_t> in_use_{0};
  std::mutex mutex_;
  std::vector<std::byte*> free_;
  std::vector<std::pair<std::byte*, size_t>> slabs_;
  uint64_t carved_ = 0;  // pages handed out of slabs so far
};

struct RegionInfo {
  uint64_t id = 0;
  RegionToken token{};
  uint64_t size = 0;
  uint64_t pages_held = 0;
  std::string owner;
};


// Thread-safe. Offsets and lengths are bytes; any alignment is accepted
// (a partial page is read-modify-written), though podfs sends whole pages.
class PageStore {
 public:
  explicit PageStore(uint64_t capacity_bytes);
  ~PageStore();

  Result<RegionInfo> create_region(uint64_t size, std::string owner);
  Status resize_region(uint64_t id, const RegionToken& token, uint64_t size);
  Status delete_region(uint64_t id, const RegionToken& token);
  Result<RegionInfo> region_info(uint64_t id, const RegionToken& token) const;
  std::vector<RegionInfo> regions() const;

  Status read(uint64_t id, const RegionToken& token, uint64_t offset, std::span<std::byte> out);
  Status write(uint64_t id, const RegionToken& token, uint64_t offset,
               std::span<const std::byte> data);
  // Drops the pages wholly inside the range and zeroes the partial ones.
  Status discard(uint64_t id, const RegionToken& token, uint64_t offset, uint64_t length);

  // Everything but the pod id, which the store does not know.
  pods::MemoryPodStats stats() const;

 private:
  class Region;
  Result<std::shared_ptr<Region>> find(uint64_t id, const RegionToken& token) const;
  static Status check_live(const Region& region);

  PagePool pool_;
  mutable std::shared_mutex mutex_;
  std::unordered_map<uint64_t, std::shared_ptr<Region>> regions_;
  uint64_t next_id_ = 1;
  std::atomic<uint64_t> reads_{0}, writes_{0}, bytes_read_{0}, bytes_written_{0};
  mutable std::atomic<uint64_t> refused_{0};
  LatencyHistogram read_latency_, write_latency_;
};

}  // namespace vmpod::memserver
