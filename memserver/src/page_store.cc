#include <vmpod/memserver/page_store.h>

#include <sys/mman.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <utility>

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

// Every zero tombstone points here: an entry that reads as zeros and hides
// the layers below. It belongs to no pool and is never written.
alignas(kPageSize) const std::byte kZeroPage[kPageSize] = {};
std::byte* const kTombstone = const_cast<std::byte*>(kZeroPage);

// A page its map owns, as opposed to a tombstone or no entry.
bool owned(const std::byte* page) { return page != nullptr && page != kTombstone; }

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

Result<RegionToken> random_token() {
  RegionToken token;
  if (::getrandom(token.data(), token.size(), 0) != static_cast<ssize_t>(token.size())) {
    return fail_errno("getrandom", errno);
  }
  return token;
}

Status check_range(uint64_t offset, uint64_t length, uint64_t size) {
  if (offset > size || length > size - offset) {
    return fail(ErrorCode::kInvalidArgument, "range " + std::to_string(offset) + "+" +
                                                 std::to_string(length) + " is beyond the region's " +
                                                 std::to_string(size) + " bytes");
  }
  return {};
}

// One answer for an unknown id and a wrong token: a guess learns nothing.
tl::unexpected<Error> refusal(std::string_view what, uint64_t id) {
  return fail(ErrorCode::kPermissionDenied, std::string(what) + " " + std::to_string(id) +
                                                " does not exist or the token is wrong");
}

}  // namespace

// Locking, outermost first; a thread takes them only in this order:
//   1. flatten_pass_mutex_: one flattening pass at a time;
//   2. PageStore::mutex_: the maps of regions and versions, never held
//      while another lock below is taken;
//   3. Region::mutex(): the region's size, its writable layer and which
//      frozen layer it reads through to;
//   4. Layer::mutex, top-down along a chain (a Chain takes them): what a
//      frozen layer holds and what lies below it, which only the flattener
//      changes;
//   5. PagePool's mutex, a leaf.
// The flattener takes a region's lock only to find its chain, and then one
// layer's lock at a time: it never waits on a layer while holding another.
// flattener_mutex_ guards only the flattener's wake-up and is taken with no
// other lock held.

// One layer's pages in tables of 512, found by hash: a sparse region of any
// size costs nothing until written, and a lookup is a hash and an index. An
// entry is a page the map owns, the tombstone, or absent: absent reads
// through to the layer below.
class PageStore::PageMap {
 public:
  explicit PageMap(PagePool& pool) : pool_(&pool) {}
  PageMap(PageMap&& other) noexcept
      : pool_(other.pool_), held_(std::exchange(other.held_, 0)), tables_(std::move(other.tables_)) {
    other.tables_.clear();
  }
  PageMap& operator=(PageMap&&) = delete;
  ~PageMap() { drop_from(0); }

  uint64_t pages_held() const { return held_; }

  std::byte* get(uint64_t index) const {
    auto it = tables_.find(index / kTablePages);
    return it == tables_.end() ? nullptr : (*it->second)[index % kTablePages];
  }

  // Replaces the entry; an owned page it held goes back to the pool.
  void set(uint64_t index, std::byte* page) {
    auto it = tables_.find(index / kTablePages);
    if (it == tables_.end()) {
      if (page == nullptr) return;
      it = tables_.emplace(index / kTablePages, std::make_unique<Table>()).first;
    }
    std::byte*& slot = (*it->second)[index % kTablePages];
    release(slot);
    slot = page;
    if (owned(page)) ++held_;
  }

  // Drops every entry from `first` on.
  void drop_from(uint64_t first) {
    for (auto it = tables_.begin(); it != tables_.end();) {
      uint64_t base = it->first * kTablePages;
      if (base + kTablePages <= first) {
        ++it;
        continue;
      }
      for (uint64_t slot = first > base ? first - base : 0; slot < kTablePages; ++slot) {
        release((*it->second)[slot]);
        (*it->second)[slot] = nullptr;
      }
      it = base >= first ? tables_.erase(it) : std::next(it);
    }
  }

  // Calls visit(index) for each owned page from `first` on.
  template <class Visit>
  void for_each_page_from(uint64_t first, Visit visit) const {
    for (const auto& [key, table] : tables_) {
      for (uint64_t slot = 0; slot < kTablePages; ++slot) {
        uint64_t index = key * kTablePages + slot;
        if (index >= first && owned((*table)[slot])) visit(index);
      }
    }
  }

  // Takes over `lower`'s entries where this map has none; lower's pages
  // that this map hides go back to the pool. `lower` ends empty.
  void absorb(PageMap& lower) {
    for (auto& [key, lower_table] : lower.tables_) {
      std::unique_ptr<Table>& table = tables_[key];
      if (!table) {
        // A whole table moves without touching its pages.
        table = std::move(lower_table);
        held_ += static_cast<uint64_t>(std::count_if(table->begin(), table->end(), owned));
        continue;
      }
      for (uint64_t slot = 0; slot < kTablePages; ++slot) {
        std::byte*& mine = (*table)[slot];
        std::byte* theirs = std::exchange((*lower_table)[slot], nullptr);
        if (mine == nullptr) {
          mine = theirs;
          if (owned(theirs)) ++held_;
        } else if (owned(theirs)) {
          pool_->release(theirs);
        }
      }
    }
    lower.tables_.clear();
    lower.held_ = 0;
  }

 private:
  using Table = std::array<std::byte*, kTablePages>;

  void release(std::byte* page) {
    if (!owned(page)) return;
    pool_->release(page);
    --held_;
  }

  PagePool* pool_;
  uint64_t held_ = 0;
  std::unordered_map<uint64_t, std::unique_ptr<Table>> tables_;
};

// A frozen layer: pages nobody writes, over an optional older layer. Users
// (the shared_ptrs to it) are the regions reading through to it, the layers
// above it and the versions naming it; it is freed with its last user. Only
// the flattener changes a layer, and never what reads through it see.
class PageStore::Layer {
 public:
  Layer(PageMap pages, std::shared_ptr<Layer> below)
      : pages_(std::move(pages)), below_(std::move(below)) {}

  // Readers hold the lock shared while they look through the layer; the
  // flattener holds it exclusive to change pages_ and below_.
  std::shared_mutex& mutex() const { return mutex_; }
  const PageMap& pages() const { return pages_; }
  const std::shared_ptr<Layer>& below() const { return below_; }

  // True when nothing but this layer reads through the one below it. The
  // count can not rise meanwhile: a layer's below_ is copied only by the
  // flattener, and a layer that no region or version names can not gain one.
  bool sole_user_of_below() const { return below_ && below_.use_count() == 1; }

  // Merges the layer below into this one. What this layer reads as does not
  // change, and the layer below had no other reader (sole_user_of_below), so
  // no one sees a difference; the pages it held that this layer hides are
  // freed. Callers run one at a time (flatten_pass_mutex_).
  void absorb_below() {
    std::shared_ptr<Layer> lower;
    {
      std::unique_lock lock(mutex_);
      lower = std::move(below_);
      pages_.absorb(lower->pages_);
      below_ = std::move(lower->below_);
    }
  }

  // Hands this layer's pages to the writable layer above it, which hides
  // them where it has its own, and returns the layer below: for a region
  // that is this layer's only reader (see Region::absorb_base).
  std::shared_ptr<Layer> merge_into(PageMap& upper) {
    std::unique_lock lock(mutex_);
    upper.absorb(pages_);
    return std::move(below_);
  }

 private:
  mutable std::shared_mutex mutex_;
  PageMap pages_;
  std::shared_ptr<Layer> below_;
};

// The frozen layers under a region, read-locked top-down for as long as the
// Chain lives, so the flattener can not splice one out during a read.
class PageStore::Chain {
 public:
  explicit Chain(const std::shared_ptr<Layer>& top) {
    for (const Layer* layer = top.get(); layer != nullptr; layer = layer->below().get()) {
      locks_.emplace_back(layer->mutex());
      layers_.push_back(layer);
    }
  }

  // Unlocks bottom-up. Top-down, the flattener could take the top layer as
  // soon as it is free, merge and free the one below, and this would then
  // unlock a freed mutex.
  ~Chain() {
    while (!locks_.empty()) locks_.pop_back();
  }
  Chain(const Chain&) = delete;
  Chain& operator=(const Chain&) = delete;

  uint64_t depth() const { return layers_.size(); }

  // The first entry from the top: a page, the tombstone, or nullptr.
  const std::byte* find(uint64_t index) const {
    for (const Layer* layer : layers_) {
      if (const std::byte* page = layer->pages().get(index)) return page;
    }
    return nullptr;
  }

  // True when the chain holds data for the page: a tombstone hides it.
  bool has_data(uint64_t index) const { return owned(find(index)); }

  template <class Visit>
  void for_each_page_from(uint64_t first, Visit visit) const {
    for (const Layer* layer : layers_) layer->pages().for_each_page_from(first, visit);
  }

 private:
  std::vector<std::shared_lock<std::shared_mutex>> locks_;
  std::vector<const Layer*> layers_;
};

// A region: its own writable layer over the frozen chain it reads through
// to, if any.
class PageStore::Region {
 public:
  Region(uint64_t id, RegionToken token, uint64_t size, std::string owner, PagePool& pool,
         std::shared_ptr<Layer> base, uint64_t parent)
      : id_(id),
        token_(token),
        size_(size),
        owner_(std::move(owner)),
        top_(pool),
        base_(std::move(base)),
        parent_(parent) {}

  uint64_t id() const { return id_; }
  const RegionToken& token() const { return token_; }
  std::shared_mutex& mutex() { return mutex_; }
  uint64_t size() const { return size_; }
  void set_size(uint64_t size) { size_ = size; }
  const std::string& owner() const { return owner_; }
  PageMap& top() { return top_; }
  const PageMap& top() const { return top_; }
  const std::shared_ptr<Layer>& base() const { return base_; }
  uint64_t parent() const { return parent_; }
  // Set under the region's lock by delete: an operation that found the
  // region before it was deleted must not put pages into it afterwards.
  bool deleted() const { return deleted_; }

  void mark_deleted() {
    deleted_ = true;
    top_.drop_from(0);
    base_.reset();
  }

  // True when nothing but this region reads its frozen base: the last
  // version on it was released and no fork reads it.
  bool sole_user_of_base() const { return base_ && base_.use_count() == 1; }

  // Merges the base into the writable layer, so a snapshot that is gone
  // costs neither a layer on every read nor the pages this region has
  // rewritten since. The caller holds the region's lock exclusively and
  // checked sole_user_of_base(): no one else can see the difference.
  void absorb_base() {
    std::shared_ptr<Layer> base = std::move(base_);
    base_ = base->merge_into(top_);
  }

  // The writable layer becomes a frozen one, which the region and the new
  // version `version` then read through to; the region writes a fresh layer.
  std::shared_ptr<Layer> freeze(uint64_t version) {
    base_ = std::make_shared<Layer>(std::move(top_), std::move(base_));
    parent_ = version;
    return base_;
  }

  // The page to write `index` into, copied up from the chain first when
  // only part of it will be written (copy-on-write).
  Result<std::byte*> writable_page(uint64_t index, const Chain& below, bool partial,
                                   PagePool& pool) {
    std::byte* page = top_.get(index);
    if (owned(page)) return page;
    std::byte* fresh = pool.allocate();
    if (fresh == nullptr) {
      return fail(ErrorCode::kNoSpace,
                  "memory pod full: " + std::to_string(pool.capacity_pages()) + " pages held");
    }
    if (page == nullptr && partial) {
      if (const std::byte* old = below.find(index)) std::memcpy(fresh, old, kPageSize);
    }
    top_.set(index, fresh);
    return fresh;
  }

  // True when the page reads as anything but zeros.
  bool has_data(uint64_t index, const Chain& below) const {
    const std::byte* page = top_.get(index);
    return page != nullptr ? owned(page) : below.has_data(index);
  }

  // Makes the page read as zeros: a tombstone where the chain has data to
  // hide, no entry at all otherwise.
  void clear_page(uint64_t index, const Chain& below) {
    top_.set(index, below.has_data(index) ? kTombstone : nullptr);
  }

 private:
  const uint64_t id_;
  const RegionToken token_;
  uint64_t size_;
  const std::string owner_;
  bool deleted_ = false;
  std::shared_mutex mutex_;
  PageMap top_;
  std::shared_ptr<Layer> base_;
  uint64_t parent_;  // the version last frozen from or forked from, or 0
};

// What a holder names: a frozen layer and what the region was then.
// Immutable once made.
struct PageStore::Version {
  uint64_t id;
  RegionToken token;
  uint64_t size;
  uint64_t parent;
  std::shared_ptr<Layer> layer;
};

PageStore::PageStore(uint64_t capacity_bytes) : pool_(capacity_bytes / kPageSize) {}

PageStore::~PageStore() {
  {
    std::lock_guard lock(flattener_mutex_);
    stopping_ = true;
  }
  flattener_wake_.notify_one();
  if (flattener_.joinable()) flattener_.join();
}

RegionInfo PageStore::info_of(const Region& region) {
  Chain below(region.base());
  return RegionInfo{region.id(),         region.token(), region.size(),
                    region.top().pages_held(), region.owner(), 1 + below.depth()};
}

Result<RegionInfo> PageStore::add_region(uint64_t size, std::string owner,
                                         std::shared_ptr<Layer> base, uint64_t parent) {
  auto token = random_token();
  if (!token) return fail(token.error());
  std::shared_ptr<Region> region;
  {
    std::unique_lock lock(mutex_);
    uint64_t id = next_id_++;
    region = std::make_shared<Region>(id, *token, size, std::move(owner), pool_, std::move(base),
                                      parent);
    regions_.emplace(id, region);
  }
  std::shared_lock lock(region->mutex());
  return info_of(*region);
}

Result<RegionInfo> PageStore::create_region(uint64_t size, std::string owner) {
  return add_region(size, std::move(owner), nullptr, 0);
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
  if (it == regions_.end() || !same_token(it->second->token(), token)) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return refusal("region", id);
  }
  return it->second;
}

Result<std::shared_ptr<PageStore::Version>> PageStore::find_version(
    uint64_t id, const RegionToken& token) const {
  std::shared_lock lock(mutex_);
  auto it = versions_.find(id);
  if (it == versions_.end() || !same_token(it->second->token, token)) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return refusal("version", id);
  }
  return it->second;
}

Status PageStore::resize_region(uint64_t id, const RegionToken& token, uint64_t size) {
  auto region = find(id, token);
  if (!region) return fail(region.error());
  std::unique_lock lock((*region)->mutex());
  VMPOD_TRY_CTX(check_live(**region), "resize");
  if (size < (*region)->size()) {
    // The partial last page is zeroed past the end so that growing again
    // reads zeros there. It comes first: it is the one step that may need
    // a page, and a refusal must leave the region as it was.
    Chain below((*region)->base());
    uint64_t last = size / kPageSize;
    if (size % kPageSize != 0 && (*region)->has_data(last, below)) {
      auto page = (*region)->writable_page(last, below, true, pool_);
      if (!page) return fail(page.error().context("resize"));
      std::memset(*page + size % kPageSize, 0, kPageSize - size % kPageSize);
    }
    // Pages past the new end go back to the pool, and those of the chain
    // get tombstones.
    uint64_t first_gone = (size + kPageSize - 1) / kPageSize;
    (*region)->top().drop_from(first_gone);
    below.for_each_page_from(first_gone,
                             [&](uint64_t index) { (*region)->top().set(index, kTombstone); });
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
  bool had_versions;
  {
    std::unique_lock lock((*region)->mutex());
    had_versions = (*region)->base() != nullptr;
    (*region)->mark_deleted();
  }
  // Layers it read through may now have one user left.
  if (had_versions) request_flatten();
  return {};
}

Result<RegionInfo> PageStore::region_info(uint64_t id, const RegionToken& token) const {
  auto region = find(id, token);
  if (!region) return fail(region.error());
  std::shared_lock lock((*region)->mutex());
  return info_of(**region);
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
    out.push_back(info_of(*region));
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
  Chain below((*region)->base());
  size_t done = 0;
  while (done < out.size()) {
    uint64_t position = offset + done;
    uint64_t index = position / kPageSize;
    uint64_t in_page = position % kPageSize;
    size_t chunk = std::min<uint64_t>(kPageSize - in_page, out.size() - done);
    const std::byte* page = (*region)->top().get(index);
    if (page == nullptr) page = below.find(index);
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
  Chain below((*region)->base());
  size_t done = 0;
  while (done < data.size()) {
    uint64_t position = offset + done;
    uint64_t index = position / kPageSize;
    uint64_t in_page = position % kPageSize;
    size_t chunk = std::min<uint64_t>(kPageSize - in_page, data.size() - done);
    auto piece = data.subspan(done, chunk);
    if (chunk == kPageSize && all_zero(piece)) {
      (*region)->clear_page(index, below);  // a zero page is the absence of a page
    } else {
      auto page = (*region)->writable_page(index, below, chunk < kPageSize, pool_);
      if (!page) return fail(page.error());
      std::memcpy(*page + in_page, piece.data(), chunk);
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
  Chain below((*region)->base());
  uint64_t end = offset + length;
  for (uint64_t position = offset; position < end;) {
    uint64_t index = position / kPageSize;
    uint64_t in_page = position % kPageSize;
    uint64_t chunk = std::min(kPageSize - in_page, end - position);
    if (chunk == kPageSize) {
      (*region)->clear_page(index, below);
    } else if ((*region)->has_data(index, below)) {
      auto page = (*region)->writable_page(index, below, true, pool_);
      if (!page) return fail(page.error().context("discard"));
      std::memset(*page + in_page, 0, chunk);
    }
    position += chunk;
  }
  return {};
}

Result<VersionInfo> PageStore::freeze_region(uint64_t id, const RegionToken& token) {
  auto region = find(id, token);
  if (!region) return fail(region.error());
  auto version_token = random_token();
  if (!version_token) return fail(version_token.error());
  auto version = std::make_shared<Version>();
  version->token = *version_token;
  {
    std::unique_lock lock(mutex_);
    version->id = next_version_id_++;
  }
  {
    std::unique_lock lock((*region)->mutex());
    VMPOD_TRY_CTX(check_live(**region), "freeze");
    version->size = (*region)->size();
    version->parent = (*region)->parent();
    version->layer = (*region)->freeze(version->id);
  }
  {
    std::unique_lock lock(mutex_);
    versions_.emplace(version->id, version);
  }
  request_flatten();
  return info_of(*version);
}

VersionInfo PageStore::info_of(const Version& version) {
  std::shared_lock lock(version.layer->mutex());
  return VersionInfo{version.id, version.token, version.size,
                     version.layer->pages().pages_held(), version.parent};
}

Result<RegionInfo> PageStore::fork_region(uint64_t version, const RegionToken& token,
                                          std::string owner) {
  auto found = find_version(version, token);
  if (!found) return fail(found.error());
  return add_region((*found)->size, std::move(owner), (*found)->layer, version);
}

Status PageStore::release_version(uint64_t version, const RegionToken& token) {
  auto found = find_version(version, token);
  if (!found) return fail(found.error());
  {
    std::unique_lock lock(mutex_);
    versions_.erase(version);
  }
  // The layer goes, with the pages only it held, when `found` does, unless
  // a region or another layer still reads through it.
  found->reset();
  request_flatten();
  return {};
}

Result<VersionInfo> PageStore::version_info(uint64_t version, const RegionToken& token) const {
  auto found = find_version(version, token);
  if (!found) return fail(found.error());
  return info_of(**found);
}

// Only single-user layers are merged: merging a layer that a version or
// another chain also reads through would change what they read. So a chain
// of layers that versions still name keeps its length; every other layer is
// merged, whatever the chain's length, because the pages it holds that the
// layer above hides are memory nobody can read.
void PageStore::flatten() {
  std::lock_guard pass(flatten_pass_mutex_);
  std::vector<std::shared_ptr<Region>> all;
  {
    std::shared_lock lock(mutex_);
    for (const auto& [id, region] : regions_) all.push_back(region);
  }
  for (const auto& region : all) {
    std::shared_ptr<Layer> layer;
    {
      std::unique_lock lock(region->mutex());
      while (region->sole_user_of_base()) region->absorb_base();
      layer = region->base();
    }
    // below() is read without the layer's lock: only a flattening pass
    // changes it, and this is the only one running.
    for (; layer; layer = layer->below()) {
      while (layer->sole_user_of_below()) layer->absorb_below();
    }
  }
}

void PageStore::request_flatten() {
  std::lock_guard lock(flattener_mutex_);
  flatten_requested_ = true;
  if (!flattener_.joinable()) flattener_ = std::thread([this] { flatten_loop(); });
  flattener_wake_.notify_one();
}

void PageStore::flatten_loop() {
  std::unique_lock lock(flattener_mutex_);
  while (true) {
    flattener_wake_.wait(lock, [this] { return stopping_ || flatten_requested_; });
    if (stopping_) return;
    flatten_requested_ = false;
    lock.unlock();
    flatten();
    lock.lock();
  }
}
pods::MemoryPodStats PageStore::stats() const {
  pods::MemoryPodStats stats;
  stats.capacity_pages = pool_.capacity_pages();
  stats.pages_held = pool_.pages_in_use();
  {
    std::shared_lock lock(mutex_);
    stats.regions = regions_.size();
    stats.versions = versions_.size();
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
