// The memory pod's DRAM tier: regions of 4 KiB pages held in a bounded pool.
// A page never written is not stored and reads as zeros; a page written with
// zeros is dropped; a page returned to the pool is cleared before any region
// gets it again.
//
// Regions have versions: freezing a region makes its current pages an
// immutable version, and a fork is a new region that reads through to one.
// Writes after either are copy-on-write, page by page.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
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
  uint64_t pages_held = 0;  // in the region's own writable layer
  std::string owner;
  // Layers a read of this region may walk: its own plus the frozen ones
  // below it. Exposed so that tests can check what flattening leaves.
  uint64_t layers = 1;
};

// A frozen version. Its token, like a region's, is the only key to it:
// forking from it and releasing it both need it.
struct VersionInfo {
  uint64_t id = 0;
  RegionToken token{};
  uint64_t size = 0;         // the region's size when it was frozen
  uint64_t pages_held = 0;   // in the version's own layer (with any merged into it)
  uint64_t parent = 0;       // the version the region had been forked or frozen from, or 0
};

// Thread-safe. Offsets and lengths are bytes; any alignment is accepted
// (a partial page is read-modify-written), though podfs sends whole pages.
class PageStore {
 public:
  explicit PageStore(uint64_t capacity_bytes);
  ~PageStore();
  PageStore(const PageStore&) = delete;
  PageStore& operator=(const PageStore&) = delete;

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

  // Freezes the region's pages as a new version that nothing can write;
  // the region goes on, its writes copy-on-write above the version.
  Result<VersionInfo> freeze_region(uint64_t id, const RegionToken& token);
  // A new region of the version's size that reads through to it.
  Result<RegionInfo> fork_region(uint64_t version, const RegionToken& token, std::string owner);
  // Drops the holder's reference: the version's pages go back to the pool
  // once no region or other version reads through them.
  Status release_version(uint64_t version, const RegionToken& token);
  Result<VersionInfo> version_info(uint64_t version, const RegionToken& token) const;

  // Merges every frozen layer that only one layer reads through into that
  // layer, a region's writable one included. A background thread runs it after each freeze, release, and
  // delete of a region that had versions (what can leave a layer with one
  // user); tests call it to flatten at a known point.
  void flatten();

  // Everything but the pod id, which the store does not know.
  pods::MemoryPodStats stats() const;

 private:
  class PageMap;
  class Layer;
  class Chain;
  class Region;
  struct Version;
  Result<std::shared_ptr<Region>> find(uint64_t id, const RegionToken& token) const;
  Result<std::shared_ptr<Version>> find_version(uint64_t id, const RegionToken& token) const;
  static Status check_live(const Region& region);
  static RegionInfo info_of(const Region& region);
  static VersionInfo info_of(const Version& version);
  Result<RegionInfo> add_region(uint64_t size, std::string owner, std::shared_ptr<Layer> base,
                                uint64_t parent);
  void request_flatten();
  void flatten_loop();

  PagePool pool_;
  mutable std::shared_mutex mutex_;
  std::unordered_map<uint64_t, std::shared_ptr<Region>> regions_;
  std::unordered_map<uint64_t, std::shared_ptr<Version>> versions_;
  uint64_t next_id_ = 1;
  uint64_t next_version_id_ = 1;
  // The flattener starts with the first version: a store that never
  // freezes runs no thread.
  std::mutex flatten_pass_mutex_;  // one pass at a time
  std::mutex flattener_mutex_;
  std::condition_variable flattener_wake_;
  bool flatten_requested_ = false;
  bool stopping_ = false;
  std::thread flattener_;
  std::atomic<uint64_t> reads_{0}, writes_{0}, bytes_read_{0}, bytes_written_{0};
  mutable std::atomic<uint64_t> refused_{0};
  LatencyHistogram read_latency_, write_latency_;
};

}  // namespace vmpod::memserver
