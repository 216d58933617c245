#include <vmpod/memserver/page_store.h>

#include <sys/mman.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>

namespace vmpod::memserver {

using pods::kPageSize;

PagePool::PagePool(uint64_t capacity_pages) : capacity_pages_(capacity_pages) {}

PagePool::~PagePool() {
  for (auto [base, bytes] : slabs_) ::munmap(base, bytes);
}

std::byte* PagePool::allocate() {
  std::byte* page = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (in_use_.load(std::memory_order_relaxed) >= capacity_pages_) return nullptr;
    if (!free_.empty()) {
      page = free_.back();
      free_.pop_back();
    } else {
      if (carved_ % kSlabPages == 0) {
        uint64_t pages = std::min(kSlabPages, capacity_pages_ - carved_);
        size_t bytes = pages * kPageSize;
        void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                            -1, 0);
        if (base == MAP_FAILED) return nullptr;
        slabs_.emplace_back(static_cast<std::byte*>(base), bytes);
      }
      page = slabs_.back().first + (carved_ % kSlabPages) * kPageSize;
      ++carved_;
    }
    in_use_.fetch_add(1, std::memory_order_relaxed);
  }
  // Fresh slab pages are zero already, but a recycled page held another
  // region's data: clearing here means no page ever leaves the pool dirty.
  std::memset(page, 0, kPageSize);
  return page;
}

void PagePool::release(std::byte* page) {
  std::lock_guard lock(mutex_);
  free_.push_back(page);
  in_use_.fetch_sub(1, std::memory_order_relaxed);
}

namespace {

constexpr uint64_t kTablePages = 512;  // pages per second-level table

bool all_zero(std::span<const std::byte> bytes) {
  // Word by word through memcpy: the data may start at any alignment.
  size_t count = bytes.size() / sizeof(uint64_t);
  for (size_t i = 0; i < count; ++i) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i * sizeof(uint64_t), sizeof(word));
    if (word != 0) return false;
  }
  for (size_t i = count * sizeof(uint64_t); i < bytes.size(); ++i) {
    if (bytes[i] != std::byte{0}) return false;
  }
  return true;
}

// Token comparison that takes the same time wherever the bytes differ.
bool same_token(const RegionToken& a, const RegionToken& b) {
  uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

Status check_range(uint64_t offset, uint64_t length, uint64_t size) {
  if (offset > size || length > size - offset) {
    return fail(ErrorCode::kInvalidArgument, "range " + std::to_string(offset) + "+" +
                                                 std::to_string(length) + " is beyond the region's " +
                                                 std::to_string(size) + " bytes");
  }
  return {};
}

}  // namespace

// A region's pages in tables of 512, found by hash: a sparse region of any
// size costs nothing until written, and a lookup is a hash and an index.
class PageStore::Region {
 public:
  Region(uint64_t id, RegionToken token, uint64_t size, std::string owner)
      : id_(id), token_(token), size_(size), owner_(std::move(owner)) {}

  uint64_t id() const { return id_; }
  const RegionToken& token() const { return token_; }
  std::shared_mutex& mutex() { return mutex_; }
  uint64_t size() const { return size_; }
  void set_size(uint64_t size) { size_ = size; }
  const std::string& owner() const { return owner_; }
  uint64_t pages_held() const { return held_; }
  // Set under the region's lock by delete: an operation that found the
  // region before it was deleted must not put pages into it afterwards.
  bool deleted() const { return deleted_; }
  void mark_deleted() { deleted_ = true; }

  std::byte* get(uint64_t index) const {
    auto it = tables_.find(index / kTablePages);
    return it == tables_.end() ? nullptr : (*it->second)[index % kTablePages];
  }

  void set(uint64_t index, std::byte* page) {
    auto& table = tables_[index / kTablePages];
    if (!table) table = std::make_unique<Table>();
    (*table)[index % kTablePages] = page;
    ++held_;
  }

  void drop(uint64_t index, PagePool& pool) {
    auto it = tables_.find(index / kTablePages);
    if (it == tables_.end()) return;
    std::byte*& slot = (*it->second)[index % kTablePages];
    if (slot == nullptr) return;
    pool.release(slot);
    slot = nullptr;
    --held_;
  }

  // Drops every page from `first` on.
  void drop_from(uint64_t first, PagePool& pool) {
    for (auto it = tables_.begin(); it != tables_.end();) {
      uint64_t base = it->first * kTablePages;
      if (base + kTablePages <= first) {
        ++it;
        continue;
      }
      for (uint64_t slot = first > base ? first - base : 0; slot < kTablePages; ++slot) {
        std::byte*& page = (*it->second)[slot];
        if (page == nullptr) continue;
        pool.release(page);
        page = nullptr;
        --held_;
      }
      it = base >= first ? tables_.erase(it) : std::next(it);
    }
  }

 private:
  using Table = std::array<std::byte*, kTablePages>;
  const uint64_t id_;
  const RegionToken token_;
  uint64_t size_;
  const std::string owner_;
  uint64_t held_ = 0;
  bool deleted_ = false;
  std::shared_mutex mutex_;
  std::unordered_map<uint64_t, std::unique_ptr<Table>> tables_;
};

PageStore::PageStore(uint64_t capacity_bytes) : pool_(capacity_bytes / kPageSize) {}

PageStore::~PageStore() {
  for (auto& [id, region] : regions_) region->drop_from(0, pool_);
}

Result<RegionInfo> PageStore::create_region(uint64_t size, std::string owner) {
  RegionToken token;
  if (::getrandom(token.data(), token.size(), 0) != static_cast<ssize_t>(token.size())) {
    return fail_errno("getrandom", errno);
  }
  std::unique_lock lock(mutex_);
  uint64_t id = next_id_++;
  auto region = std::make_shared<Region>(id, token, size, std::move(owner));
  regions_.emplace(id, region);
  return RegionInfo{id, token, size, 0, region->owner()};
}

Status PageStore::check_live(const Region& region) {
  if (region.deleted()) {
    return fail(ErrorCode::kPermissionDenied, "region " + std::to_string(region.id()) + " was deleted");
  }
  return {};
}

Result<std::shared_ptr<PageStore::Region>> PageStore::find(uint64_t id,
                                                           const RegionToken& token) const {
  std::shared_lock lock(mutex_);
  auto it = regions_.find(id);
  // One answer for an unknown region and a wrong token: a guess learns nothing.
  if (it == regions_.end() || !same_token(it->second->token(), token)) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return fail(ErrorCode::kPermissionDenied,
                "region " + std::to_string(id) + " does not exist or the token is wrong");
  }
  return it->second;
}

Status PageStore::resize_region(uint64_t id, const RegionToken& token, uint64_t size) {
  auto region = find(id, token);
  if (!region) return fail(region.error());
  std::unique_lock lock((*region)->mutex());
  VMPOD_TRY_CTX(check_live(**region), "resize");
  uint64_t old_size = (*region)->size();
  if (size < old_size) {
    // Pages past the new end go back to the pool; the partial last page is
    // zeroed past the end so that growing again reads zeros there.
    (*region)->drop_from((size + kPageSize - 1) / kPageSize, pool_);
    if (size % kPageSize != 0) {
      if (std::byte* page = (*region)->get(size / kPageSize)) {
        std::memset(page + size % kPageSize, 0, kPageSize - size % kPageSize);
      }
    }
  }
  (*region)->set_size(size);
  return {};
}

Status PageStore::delete_region(uint64_t id, const RegionToken& token) {
  auto region = find(id, token);
  if (!region) return fail(region.error());
  {
    std::unique_lock lock(mutex_);
    regions_.erase(id);
  }
  std::unique_lock lock((*region)->mutex());
  (*region)->mark_deleted();
  (*region)->drop_from(0, pool_);
  return {};
}

Result<RegionInfo> PageStore::region_info(uint64_t id, const RegionToken& token) const {
  auto region = find(id, token);
  if (!region) return fail(region.error());
  std::shared_lock lock((*region)->mutex());
  return RegionInfo{id, token, (*region)->size(), (*region)->pages_held(), (*region)->owner()};
}

std::vector<RegionInfo> PageStore::regions() const {
  std::vector<std::shared_ptr<Region>> all;
  {
    std::shared_lock lock(mutex_);
    for (const auto& [id, region] : regions_) all.push_back(region);
  }
  std::vector<RegionInfo> out;
  for (const auto& region : all) {
    std::shared_lock lock(region->mutex());
    out.push_back(RegionInfo{region->id(), region->token(), region->size(), region->pages_held(),
                             region->owner()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

Status PageStore::read(uint64_t id, const RegionToken& token, uint64_t offset,
                       std::span<std::byte> out) {
  ScopedLatency timer(read_latency_);
  auto region = find(id, token);
  if (!region) return fail(region.error());
  std::shared_lock lock((*region)->mutex());
  VMPOD_TRY_CTX(check_range(offset, out.size(), (*region)->size()), "read");
  size_t done = 0;
  while (done < out.size()) {
    uint64_t position = offset + done;
    uint64_t in_page = position % kPageSize;
    size_t chunk = std::min<uint64_t>(kPageSize - in_page, out.size() - done);
    const std::byte* page = (*region)->get(position / kPageSize);
    if (page != nullptr) {
      std::memcpy(out.data() + done, page + in_page, chunk);
    } else {
      std::memset(out.data() + done, 0, chunk);
    }
    done += chunk;
  }
  reads_.fetch_add(1, std::memory_order_relaxed);
  bytes_read_.fetch_add(out.size(), std::memory_order_relaxed);
  return {};
}

Status PageStore::write(uint64_t id, const RegionToken& token, uint64_t offset,
                        std::span<const std::byte> data) {
  ScopedLatency timer(write_latency_);
  auto region = find(id, token);
  if (!region) return fail(region.error());
  std::unique_lock lock((*region)->mutex());
  VMPOD_TRY_CTX(check_live(**region), "write");
  VMPOD_TRY_CTX(check_range(offset, data.size(), (*region)->size()), "write");
  size_t done = 0;
  while (done < data.size()) {
    uint64_t position = offset + done;
    uint64_t index = position / kPageSize;
    uint64_t in_page = position % kPageSize;
    size_t chunk = std::min<uint64_t>(kPageSize - in_page, data.size() - done);
    auto piece = data.subspan(done, chunk);
    std::byte* page = (*region)->get(index);
    if (chunk == kPageSize && all_zero(piece)) {
      (*region)->drop(index, pool_);  // a zero page is the absence of a page
    } else {
      if (page == nullptr) {
        if (!(page = pool_.allocate())) {
          return fail(ErrorCode::kNoSpace, "memory pod full: " +
                                               std::to_string(pool_.capacity_pages()) +
                                               " pages held");
        }
        (*region)->set(index, page);
      }
      std::memcpy(page + in_page, piece.data(), chunk);
    }
    done += chunk;
  }
  writes_.fetch_add(1, std::memory_order_relaxed);
  bytes_written_.fetch_add(data.size(), std::memory_order_relaxed);
  return {};
}

Status PageStore::discard(uint64_t id, const RegionToken& token, uint64_t offset, uint64_t length) {
  auto region = find(id, token);
  if (!region) return fail(region.error());
  std::unique_lock lock((*region)->mutex());
  VMPOD_TRY_CTX(check_live(**region), "discard");
  VMPOD_TRY_CTX(check_range(offset, length, (*region)->size()), "discard");
  uint64_t end = offset + length;
  for (uint64_t position = offset; position < end;) {
    uint64_t index = position / kPageSize;
    uint64_t in_page = position % kPageSize;
    uint64_t chunk = std::min(kPageSize - in_page, end - position);
    if (chunk == kPageSize) {
      (*region)->drop(index, pool_);
    } else if (std::byte* page = (*region)->get(index)) {
      std::memset(page + in_page, 0, chunk);
    }
    position += chunk;
  }
  return {};
}

pods::MemoryPodStats PageStore::stats() const {
  pods::MemoryPodStats stats;
  stats.capacity_pages = pool_.capacity_pages();
  stats.pages_held = pool_.pages_in_use();
  {
    std::shared_lock lock(mutex_);
    stats.regions = regions_.size();
  }
  stats.reads = reads_.load();
  stats.writes = writes_.load();
  stats.bytes_read = bytes_read_.load();
  stats.bytes_written = bytes_written_.load();
  stats.refused = refused_.load();
  stats.read_latency = read_latency_.snapshot();
  stats.write_latency = write_latency_.snapshot();
  return stats;
}

}  // namespace vmpod::memserver
