#include <vmpod/cpuserver/podfs.h>

#include <fcntl.h>
#include <fuse3/fuse_lowlevel.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/base/histogram.h>
#include <vmpod/cpuserver/podfs_cache.h>
#include <vmpod/cpuserver/podfs_placement.h>
#include <vmpod/cpuserver/stripe_layout.h>

#include "prefetcher.h"
#include "read_recorder.h"

namespace vmpod::cpuserver {

namespace {

using pods::kPageSize;

constexpr double kAttrTimeout = 1.0;
constexpr unsigned kMaxIo = 1u << 20;

timespec now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

// Which pages of a file were ever written through this podfs: a READ of
// pages no one wrote is answered with zeros without touching the network.
class WrittenMap {
 public:
  void mark(uint64_t offset, uint64_t length) {
    std::unique_lock lock(mutex_);
    for (uint64_t page = offset / kPageSize; page * kPageSize < offset + length; ++page) {
      if (page / 64 >= bits_.size()) bits_.resize(page / 64 + 1);
      bits_[page / 64] |= 1ull << (page % 64);
    }
  }
  // Pages wholly inside the range read as zeros again.
  void clear(uint64_t offset, uint64_t length) {
    std::unique_lock lock(mutex_);
    uint64_t first = (offset + kPageSize - 1) / kPageSize;
    for (uint64_t page = first; (page + 1) * kPageSize <= offset + length; ++page) {
      if (page / 64 < bits_.size()) bits_[page / 64] &= ~(1ull << (page % 64));
    }
  }
  bool any(uint64_t offset, uint64_t length) const {
    std::shared_lock lock(mutex_);
    for (uint64_t page = offset / kPageSize; page * kPageSize < offset + length; ++page) {
      if (page / 64 >= bits_.size()) return false;
      if (bits_[page / 64] == 0) {
        page |= 63;  // skip the rest of an empty word
        continue;
      }
      if (bits_[page / 64] & (1ull << (page % 64))) return true;
    }
    return false;
  }

 private:
  mutable std::shared_mutex mutex_;
  std::vector<uint64_t> bits_;
};

// What a READ of pages no one wrote is answered from: kMaxIo bytes of
// zeros. Real pages, populated up front and then made read-only: the kernel
// pins the pages of a reply to copy them, and pinning the shared zero page
// (what untouched anonymous memory maps) takes its slow path.
class ZeroPages {
 public:
  ZeroPages() {
    void* p = ::mmap(nullptr, kMaxIo, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) return;
    std::memset(p, 0, kMaxIo);  // every page its own, even if MAP_POPULATE fell short
    ::mprotect(p, kMaxIo, PROT_READ);
    data_ = static_cast<const std::byte*>(p);
  }
  ~ZeroPages() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), kMaxIo);
  }
  ZeroPages(const ZeroPages&) = delete;
  ZeroPages& operator=(const ZeroPages&) = delete;
  const std::byte* data() const { return data_; }  // kMaxIo bytes; null if mmap failed

 private:
  const std::byte* data_ = nullptr;
};

// Where a file's pages live: a set of the mount's memory pods (indices into
// Impl::pods) and the stripes over them. Fixed when the file is created.
struct FileLayout {
  std::vector<size_t> pods;
  StripeLayout stripes;
};

struct FileData {
  std::shared_ptr<const FileLayout> layout;
  std::vector<pods::RegionHandle> regions;  // one per layout->pods entry
  WrittenMap written;
  // Its unlink deletes its regions. Not while they are handed over to or
  // from another podfs (kOwnedXattr, kAdoptXattr).
  std::atomic<bool> owned{true};

  pods::MemoryPodClient& pod(const std::vector<std::shared_ptr<pods::MemoryPodClient>>& all, size_t i) const {
    return *all[layout->pods[i]];
  }
};

struct Node {
  fuse_ino_t ino = 0;
  fuse_ino_t parent = 0;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  nlink_t nlink = 1;
  uint64_t size = 0;
  timespec atime{}, mtime{}, ctime{};
  std::map<std::string, fuse_ino_t> children;
  uint64_t lookups = 0;
  uint64_t opens = 0;
  std::shared_ptr<FileData> data;  // regular files only
  // Directories: the layout of files created below (kPlacementXattr).
  std::shared_ptr<const FileLayout> placement;

  bool is_dir() const { return S_ISDIR(mode); }
};

}  // namespace

struct Podfs::Impl {
  PodfsConfig config;
  std::atomic<bool> owns_regions{true};  // see disown_regions()
  std::shared_ptr<const FileLayout> default_layout;  // every pod, config's stripe
  std::vector<std::shared_ptr<pods::MemoryPodClient>> pods;
  PodfsCache cache;
  ZeroPages zeros;

  mutable std::mutex mutex;  // the namespace: nodes and their attributes
  std::unordered_map<fuse_ino_t, std::unique_ptr<Node>> nodes;
  fuse_ino_t next_ino = FUSE_ROOT_ID + 1;

  fuse_session* session = nullptr;
  std::thread loop;
  dev_t device = 0;

  std::mutex evict_mutex;
  std::condition_variable evict_wake;
  std::condition_variable evicted;  // the evictor made progress
  bool stopping = false;
  std::thread evictor;

  std::atomic<uint64_t> reads{0}, bytes_read{0}, writes{0}, bytes_written{0}, zero_reads{0},
      evictions{0}, bytes_evicted{0}, io_errors{0};
  LatencyHistogram read_latency, write_latency;

  ReadRecorder recorder;
  Prefetcher prefetcher;  // last: its threads use the members above

  Impl(const PodfsConfig& c, std::shared_ptr<const FileLayout> l)
      : config(c), default_layout(std::move(l)), cache(c.local_cache_bytes),
        prefetcher(c.mountpoint, cache, [this](uint64_t ino) { return has_name(ino); }) {}

  static Impl* of(fuse_req_t req) { return static_cast<Impl*>(fuse_req_userdata(req)); }

  Node* find(fuse_ino_t ino) {
    auto it = nodes.find(ino);
    return it == nodes.end() ? nullptr : it->second.get();
  }

  // The regular file `name` in the root directory, or null; under `mutex`.
  const Node* root_file(const std::string& name) const {
    const Node& root = *nodes.at(FUSE_ROOT_ID);
    auto child = root.children.find(name);
    if (child == root.children.end()) return nullptr;
    const Node* node = nodes.at(child->second).get();
    return node->data ? node : nullptr;
  }

  bool has_name(fuse_ino_t ino) {
    std::lock_guard lock(mutex);
    Node* node = find(ino);
    return node != nullptr && node->nlink > 0;
  }

  struct stat attr_of(const Node& node) const {
    struct stat st {};
    st.st_ino = node.ino;
    st.st_mode = node.mode;
    st.st_nlink = node.nlink;
    st.st_uid = node.uid;
    st.st_gid = node.gid;
    st.st_size = static_cast<off_t>(node.size);
    st.st_blksize = 4096;
    st.st_blocks = static_cast<blkcnt_t>((node.size + 511) / 512);
    st.st_atim = node.atime;
    st.st_mtim = node.mtime;
    st.st_ctim = node.ctime;
    return st;
  }

  fuse_entry_param entry_of(Node& node) {
    ++node.lookups;
    fuse_entry_param e{};
    e.ino = node.ino;
    e.attr = attr_of(node);
    e.attr_timeout = kAttrTimeout;
    e.entry_timeout = kAttrTimeout;
    return e;
  }

  Node& add_node(fuse_ino_t parent, mode_t mode, const fuse_ctx* ctx) {
    auto node = std::make_unique<Node>();
    node->ino = next_ino++;
    node->parent = parent;
    node->mode = mode;
    node->uid = ctx->uid;
    node->gid = ctx->gid;
    node->nlink = S_ISDIR(mode) ? 2 : 1;
    node->atime = node->mtime = node->ctime = now();
    Node& ref = *node;
    nodes.emplace(ref.ino, std::move(node));
    return ref;
  }

  // The layout of a file created in `dir`: the nearest placement set on it
  // or above it, else the mount's.
  std::shared_ptr<const FileLayout> layout_below(fuse_ino_t dir) {
    std::lock_guard lock(mutex);
    for (Node* node = find(dir); node != nullptr; node = find(node->parent)) {
      if (node->placement) return node->placement;
      if (node->ino == FUSE_ROOT_ID) break;
    }
    return default_layout;
  }

  std::string describe(const FileLayout& layout) const {
    std::vector<std::string> ids;
    for (size_t pod : layout.pods) ids.push_back(pods[pod]->pod_id());
    return format_placement(ids, layout.stripes.stripe_bytes());
  }

  // The indices into `pods` of the pods named `ids`, in that order.
  Result<std::vector<size_t>> pod_indices(const std::vector<std::string>& ids) const {
    std::vector<size_t> indices;
    for (const auto& id : ids) {
      auto it = std::find_if(pods.begin(), pods.end(), [&](const auto& pod) { return pod->pod_id() == id; });
      if (it == pods.end()) return fail(ErrorCode::kNotFound, "no memory pod " + id + " here");
      indices.push_back(static_cast<size_t>(it - pods.begin()));
    }
    return indices;
  }

  // The pods a placement names, or the `count` with the most free pages
  // (a pod that does not answer is not chosen).
  Result<std::shared_ptr<const FileLayout>> resolve(const PlacementRequest& request) {
    std::vector<size_t> chosen;
    if (!request.pod_ids.empty()) {
      auto named = pod_indices(request.pod_ids);
      if (!named) return fail(named.error().context("placement"));
      chosen = std::move(*named);
    } else {
      size_t count = request.pod_count ? request.pod_count : pods.size();
      if (count > pods.size()) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("placement: {} memory pods asked for, {} here", count, pods.size()));
      }
      std::vector<std::pair<uint64_t, size_t>> free_pages;
      for (size_t i = 0; i < pods.size(); ++i) {
        auto stats = pods[i]->stats();
        if (stats) free_pages.emplace_back(stats->capacity_pages - std::min(stats->capacity_pages, stats->pages_held), i);
      }
      if (free_pages.size() < count) {
        return fail(ErrorCode::kUnavailable,
                    fmt::format("placement: {} memory pods asked for, {} answering", count, free_pages.size()));
      }
      std::stable_sort(free_pages.begin(), free_pages.end(), [](auto& a, auto& b) { return a.first > b.first; });
      for (size_t i = 0; i < count; ++i) chosen.push_back(free_pages[i].second);
      std::sort(chosen.begin(), chosen.end());
    }
    auto stripes = StripeLayout::create(chosen.size(), request.stripe_bytes ? request.stripe_bytes
                                                                            : default_layout->stripes.stripe_bytes());
    if (!stripes) return fail(stripes.error());
    return std::make_shared<const FileLayout>(FileLayout{std::move(chosen), *stripes});
  }

  static void reply_xattr(fuse_req_t req, const std::string& value, size_t size) {
    if (size == 0) return (void)fuse_reply_xattr(req, value.size());
    if (size < value.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, value.data(), value.size());
  }

  // The handover attributes carry region tokens: root's alone.
  static bool by_root(fuse_req_t req) { return fuse_req_ctx(req)->uid == 0; }

  static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                          int flags) {
    Impl* self = of(req);
    std::string_view text(value, size);
    if (name == kAdoptXattr) return set_adopt(self, req, ino, text);
    if (name == kOwnedXattr) return set_owned(self, req, ino, text);
    if (name != kPlacementXattr) return (void)fuse_reply_err(req, ENOTSUP);
    {
      std::lock_guard lock(self->mutex);
      Node* node = self->find(ino);
      if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
      // A file's layout is fixed when it is created.
      if (!node->is_dir()) return (void)fuse_reply_err(req, EPERM);
      if ((flags & XATTR_CREATE) && node->placement) return (void)fuse_reply_err(req, EEXIST);
      if ((flags & XATTR_REPLACE) && !node->placement) return (void)fuse_reply_err(req, ENODATA);
    }
    if (self->config.null_store) return (void)fuse_reply_err(req, ENOTSUP);
    auto request = parse_placement(text);
    auto layout = request ? self->resolve(*request) : fail(request.error());
    if (!layout) {
      spdlog::warn("podfs: placement of inode {} refused: {}", ino, layout.error().to_string());
      return (void)fuse_reply_err(req, layout.error().code() == ErrorCode::kUnavailable ? EAGAIN : EINVAL);
    }
    std::lock_guard lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
    node->placement = std::move(*layout);
    node->ctime = now();
    fuse_reply_err(req, 0);
  }

  static void set_owned(Impl* self, fuse_req_t req, fuse_ino_t ino, std::string_view text) {
    if (!by_root(req)) return (void)fuse_reply_err(req, EACCES);
    if (text != "yes" && text != "no") return (void)fuse_reply_err(req, EINVAL);
    std::lock_guard lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if (!node->data) return (void)fuse_reply_err(req, EPERM);
    node->data->owned = text == "yes";
    node->ctime = now();
    fuse_reply_err(req, 0);
  }

  // Creates a file in directory `ino` on regions another podfs holds: the
  // other end of kRegionsXattr. The regions are checked with their pods
  // (each answers a resize to the size it has only for the right token)
  // before the name appears; the file is not owned until kOwnedXattr says.
  static void set_adopt(Impl* self, fuse_req_t req, fuse_ino_t ino, std::string_view text) {
    if (!by_root(req)) return (void)fuse_reply_err(req, EACCES);
    auto adoption = parse_adoption(text);
    auto data = adoption ? self->handed_over(adoption->second) : fail(adoption.error());
    if (!data) {
      spdlog::warn("podfs: adoption in inode {} refused: {}", ino, data.error().to_string());
      return (void)fuse_reply_err(req, error_code_errno(data.error().code()));
    }
    (*data)->owned = false;
    auto added = self->add_file(ino, adoption->first, std::move(*data), adoption->second.size, fuse_req_ctx(req));
    fuse_reply_err(req, added ? 0 : error_code_errno(added.error().code()));
  }

  Result<std::shared_ptr<FileData>> handed_over(const FileHandover& file) {
    if (config.null_store) return fail(ErrorCode::kInvalidArgument, "a null store holds no regions");
    auto chosen = pod_indices(file.pod_ids);
    if (!chosen) return fail(chosen.error());
    auto stripes = StripeLayout::create(chosen->size(), file.stripe_bytes);
    if (!stripes) return fail(stripes.error());
    auto data = std::make_shared<FileData>();
    data->layout = std::make_shared<const FileLayout>(FileLayout{std::move(*chosen), *stripes});
    data->regions = file.regions;
    for (size_t i = 0; i < data->regions.size(); ++i) {
      VMPOD_TRY_CTX(data->pod(pods, i).resize_region(data->regions[i], stripes->pod_region_size(i, file.size)),
                    "region " + std::to_string(data->regions[i].id) + " on " + file.pod_ids[i]);
    }
    // Any page may hold data: every READ asks the memory pods.
    data->written.mark(0, file.size);
    return data;
  }

  // Names a new file `name` in directory `dir`, on `data`.
  Status add_file(fuse_ino_t dir_ino, const std::string& name, std::shared_ptr<FileData> data, uint64_t size,
                  const fuse_ctx* owner) {
    std::lock_guard lock(mutex);
    Node* dir = find(dir_ino);
    if (dir == nullptr || !dir->is_dir()) return fail(ErrorCode::kNotFound, "podfs: no such directory");
    if (dir->children.count(name)) return fail(ErrorCode::kAlreadyExists, "podfs: '" + name + "' exists");
    Node& node = add_node(dir_ino, S_IFREG | 0600, owner);
    node.size = size;
    node.data = std::move(data);
    dir->children.emplace(name, node.ino);
    dir->mtime = dir->ctime = now();
    return {};
  }

  static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
    Impl* self = of(req);
    std::string value;
    {
      std::lock_guard lock(self->mutex);
      Node* node = self->find(ino);
      if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
      if (name == kMemoryPodsXattr && ino == FUSE_ROOT_ID) {
        std::vector<std::string> ids;
        for (const auto& pod : self->pods) ids.push_back(pod->pod_id());
        value = fmt::format("{}", fmt::join(ids, ","));
      } else if (name == kPlacementXattr && (node->data || node->placement)) {
        value = self->describe(node->data ? *node->data->layout : *node->placement);
      } else if (name == kRegionsXattr && node->data) {
        if (!by_root(req)) return (void)fuse_reply_err(req, EACCES);
        FileHandover file{node->size, node->data->layout->stripes.stripe_bytes(), {}, node->data->regions};
        for (size_t pod : node->data->layout->pods) file.pod_ids.push_back(self->pods[pod]->pod_id());
        value = format_handover(file);
      } else if (name == kOwnedXattr && node->data) {
        value = node->data->owned ? "yes" : "no";
      } else {
        return (void)fuse_reply_err(req, ENODATA);
      }
    }
    reply_xattr(req, value, size);
  }

  static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
    Impl* self = of(req);
    std::string names;
    {
      std::lock_guard lock(self->mutex);
      Node* node = self->find(ino);
      if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
      if (ino == FUSE_ROOT_ID && !self->pods.empty()) names.append(kMemoryPodsXattr).push_back('\0');
      if (node->data || node->placement) names.append(kPlacementXattr).push_back('\0');
      if (node->data) {
        names.append(kRegionsXattr).push_back('\0');
        names.append(kOwnedXattr).push_back('\0');
      }
    }
    reply_xattr(req, names, size);
  }

  static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
    Impl* self = of(req);
    std::lock_guard lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if (name != kPlacementXattr) return (void)fuse_reply_err(req, ENODATA);
    if (!node->is_dir()) return (void)fuse_reply_err(req, EPERM);
    if (!node->placement) return (void)fuse_reply_err(req, ENODATA);
    node->placement.reset();
    node->ctime = now();
    fuse_reply_err(req, 0);
  }

  Result<std::shared_ptr<FileData>> create_regions(std::shared_ptr<const FileLayout> layout) {
    auto data = std::make_shared<FileData>();
    data->layout = std::move(layout);
    for (size_t pod : data->layout->pods) {
      auto region = pods[pod]->create_region(0, config.owner);
      if (!region) {
        delete_regions(*data);
        return fail(region.error());
      }
      data->regions.push_back(*region);
    }
    return data;
  }

  void delete_regions(const FileData& data) {
    if (!owns_regions || !data.owned) return;
    for (size_t i = 0; i < data.regions.size(); ++i) {
      auto deleted = data.pod(pods, i).delete_region(data.regions[i]);
      if (!deleted) spdlog::warn("podfs: region {} not deleted: {}", data.regions[i].id, deleted.error().to_string());
    }
  }

  Status resize(FileData& data, uint64_t old_size, uint64_t size) {
    const StripeLayout& stripes = data.layout->stripes;
    for (size_t i = 0; i < data.regions.size(); ++i) {
      uint64_t pod_size = stripes.pod_region_size(i, size);
      if (pod_size == stripes.pod_region_size(i, old_size)) continue;
      VMPOD_TRY_CTX(data.pod(pods, i).resize_region(data.regions[i], pod_size), "resize");
    }
    if (size < old_size) data.written.clear(size, old_size - size);
    return {};
  }

  // A node with no name, no open file and no kernel reference is gone: its
  // regions go back to the memory pods.
  void maybe_release(Node* node, std::unique_lock<std::mutex>& lock) {
    if (node->nlink > 0 || node->opens > 0 || node->lookups > 0) return;
    auto data = std::move(node->data);
    fuse_ino_t ino = node->ino;
    nodes.erase(ino);
    if (!data) return;
    lock.unlock();
    cache.forget(ino);
    delete_regions(*data);
    lock.lock();
  }

  // The page calls of one READ or WRITE: the extents that lie back to back
  // in one pod's region go in one call. With stripes smaller than the
  // request, each pod's share of it is one call.
  struct PodRun {
    size_t pod = 0;
    uint64_t pod_offset = 0;
    uint64_t length = 0;
  };
  // Where an extent's bytes travel: in run `run` at `offset` into it, or,
  // for pages no one wrote (a READ answers them with zeros), in no run.
  struct Placement {
    static constexpr size_t kNoRun = SIZE_MAX;
    size_t run = kNoRun;
    uint64_t offset = 0;
  };

  std::vector<PodRun> plan_runs(const std::vector<StripeExtent>& extents, bool write,
                                const FileData& data, std::vector<Placement>& placements) const {
    std::vector<PodRun> runs;
    std::vector<size_t> last_run(data.regions.size(), Placement::kNoRun);
    placements.assign(extents.size(), Placement{});
    for (size_t i = 0; i < extents.size(); ++i) {
      const StripeExtent& e = extents[i];
      if (!write && !data.written.any(e.file_offset, e.length)) continue;
      size_t& last = last_run[e.pod];
      if (last == Placement::kNoRun || runs[last].pod_offset + runs[last].length != e.pod_offset ||
          runs[last].length + e.length > pods::kMaxPageIo) {
        last = runs.size();
        runs.push_back(PodRun{e.pod, e.pod_offset, 0});
      }
      placements[i] = Placement{last, runs[last].length};
      runs[last].length += e.length;
    }
    return runs;
  }

  // A READ's data where it landed: slices of the pods' receive buffers and
  // of the zero pages, in file order. The calls hold those buffers until
  // this is destroyed, after the reply went to the kernel.
  struct FetchedRead {
    std::vector<pods::MemoryPodClient::PendingPageIo> calls;
    std::vector<iovec> pieces;
    bool remote = false;  // some of it came from the pods
  };

  Status fetch(FileData& data, uint64_t offset, uint64_t length, FetchedRead& out) {
    std::vector<StripeExtent> extents;
    std::vector<Placement> placements;
    std::vector<PodRun> runs;
    if (config.null_store) {
      extents.push_back(StripeExtent{0, offset, offset, length});
      placements.resize(1);
    } else {
      extents = data.layout->stripes.map(offset, length);
      runs = plan_runs(extents, false, data, placements);
    }
    // Every call is on its way before any is waited for, so the pods serve
    // their shares at the same time.
    for (const PodRun& run : runs) {
      auto call = data.pod(pods, run.pod).start_read(data.regions[run.pod], run.pod_offset, run.length);
      if (!call) return fail(call.error().context("read"));
      out.calls.push_back(std::move(*call));
    }
    std::vector<const std::byte*> run_data;
    for (size_t r = 0; r < runs.size(); ++r) {
      auto got = data.pod(pods, runs[r].pod).finish_read(out.calls[r]);
      if (!got) return fail(got.error().context("read"));
      run_data.push_back(got->data());
    }
    out.remote = !runs.empty();
    for (size_t i = 0; i < extents.size(); ++i) {
      const Placement& p = placements[i];
      const std::byte* from = p.run == Placement::kNoRun ? zeros.data() : run_data[p.run] + p.offset;
      out.pieces.push_back(iovec{const_cast<std::byte*>(from), extents[i].length});
    }
    return {};
  }

  Status write_through(FileData& data, uint64_t offset, std::span<const std::byte> bytes) {
    if (config.null_store) return {};
    std::vector<StripeExtent> extents = data.layout->stripes.map(offset, bytes.size());
    std::vector<Placement> placements;
    std::vector<PodRun> runs = plan_runs(extents, true, data, placements);
    std::vector<std::vector<iovec>> run_pieces(runs.size());
    for (size_t i = 0; i < extents.size(); ++i) {
      auto piece = bytes.subspan(extents[i].file_offset - offset, extents[i].length);
      run_pieces[placements[i].run].push_back(
          iovec{const_cast<std::byte*>(piece.data()), piece.size()});
    }
    std::vector<pods::MemoryPodClient::PendingPageIo> calls;
    for (size_t r = 0; r < runs.size(); ++r) {
      auto call = data.pod(pods, runs[r].pod).start_write(data.regions[runs[r].pod], runs[r].pod_offset,
                                                          run_pieces[r]);
      if (!call) return fail(call.error().context("write"));
      calls.push_back(std::move(*call));
    }
    for (size_t r = 0; r < runs.size(); ++r) {
      VMPOD_TRY_CTX(data.pod(pods, runs[r].pod).finish(calls[r]), "write");
    }
    data.written.mark(offset, bytes.size());
    return {};
  }

  void evict_loop() {
    std::unique_lock lock(evict_mutex);
    while (!stopping) {
      evict_wake.wait(lock, [&] { return stopping || cache.over_limit(); });
      if (stopping) break;
      lock.unlock();
      // The kernel writes dirty pages of a chunk back (WRITEs served by the
      // session's workers) before dropping it: never call this from a worker.
      for (const CacheChunk& chunk : cache.take_evictions()) {
        int rc = fuse_lowlevel_notify_inval_inode(session, chunk.ino,
                                                  static_cast<off_t>(chunk.offset),
                                                  static_cast<off_t>(chunk.length));
        if (rc != 0 && rc != -ENOENT) spdlog::warn("podfs: evicting chunk failed: {}", strerror(-rc));
        evictions.fetch_add(1, std::memory_order_relaxed);
        bytes_evicted.fetch_add(chunk.length, std::memory_order_relaxed);
        evicted.notify_all();
      }
      lock.lock();
    }
  }

  // Backpressure: a READ that would grow a cache already over its bound
  // waits a little for the evictor. Only a little: the evictor's own
  // write-backs are served by these same workers, so waiting without end
  // could deadlock.
  void wait_for_room() {
    if (!cache.over_limit()) return;
    std::unique_lock lock(evict_mutex);
    evict_wake.notify_one();
    evicted.wait_for(lock, std::chrono::milliseconds(50), [&] { return stopping || !cache.over_limit(); });
  }

  // The cache's account is guarded by its own mutex, not evict_mutex: take
  // evict_mutex before notifying, or the evictor may test over_limit() just
  // before a READ grows the cache and then sleep through the notification,
  // leaving the cache over its bound until the next READ.
  void wake_evictor_if_over_limit() {
    if (!cache.over_limit()) return;
    std::lock_guard lock(evict_mutex);
    evict_wake.notify_one();
  }

  void reply_status(fuse_req_t req, const Status& status) {
    if (status) {
      fuse_reply_err(req, 0);
      return;
    }
    fuse_reply_err(req, error_code_errno(status.error().code()));
  }

  // --- FUSE operations -----------------------------------------------------

  static void op_init(void*, fuse_conn_info* conn) {
    conn->max_write = kMaxIo;
    conn->max_readahead = kMaxIo;
    conn->want |= FUSE_CAP_ASYNC_READ;
    // Opening the guest RAM file must never drop its cache.
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  }

  static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    Impl* self = of(req);
    std::lock_guard lock(self->mutex);
    Node* dir = self->find(parent);
    if (dir == nullptr) return (void)fuse_reply_err(req, ENOENT);
    auto it = dir->children.find(name);
    if (it == dir->children.end()) return (void)fuse_reply_err(req, ENOENT);
    fuse_entry_param e = self->entry_of(*self->find(it->second));
    fuse_reply_entry(req, &e);
  }

  static void forget_one(Impl* self, fuse_ino_t ino, uint64_t count) {
    std::unique_lock lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr || ino == FUSE_ROOT_ID) return;
    node->lookups -= std::min(node->lookups, count);
    self->maybe_release(node, lock);
  }

  static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
    forget_one(of(req), ino, nlookup);
    fuse_reply_none(req);
  }

  static void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
    for (size_t i = 0; i < count; ++i) forget_one(of(req), forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  }

  static void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    Impl* self = of(req);
    std::lock_guard lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
    struct stat st = self->attr_of(*node);
    fuse_reply_attr(req, &st, kAttrTimeout);
  }

  static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                         fuse_file_info*) {
    Impl* self = of(req);
    std::unique_lock lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if (to_set & FUSE_SET_ATTR_SIZE) {
      if (!node->data) return (void)fuse_reply_err(req, node->is_dir() ? EISDIR : EINVAL);
      uint64_t old_size = node->size;
      uint64_t size = static_cast<uint64_t>(attr->st_size);
      auto data = node->data;
      // Resizing talks to every memory pod; the namespace stays usable.
      lock.unlock();
      Status resized = self->resize(*data, old_size, size);
      lock.lock();
      if (!resized) {
        spdlog::warn("podfs: truncate of inode {} to {}: {}", ino, size, resized.error().to_string());
        return (void)fuse_reply_err(req, error_code_errno(resized.error().code()));
      }
      node = self->find(ino);
      if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
      node->size = size;
      node->mtime = now();
    }
    if (to_set & FUSE_SET_ATTR_MODE) node->mode = (node->mode & S_IFMT) | (attr->st_mode & 07777);
    if (to_set & FUSE_SET_ATTR_UID) node->uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) node->gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_ATIME) node->atime = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME) node->mtime = attr->st_mtim;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) node->atime = now();
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) node->mtime = now();
    node->ctime = now();
    struct stat st = self->attr_of(*node);
    fuse_reply_attr(req, &st, kAttrTimeout);
  }

  // Adds a child named `name` to `parent`; regular files get their regions
  // before the name is visible, so a failed allocation leaves nothing.
  static Result<Node*> make_child(Impl* self, fuse_req_t req, fuse_ino_t parent, const char* name,
                                  mode_t mode) {
    std::shared_ptr<FileData> data;
    if (S_ISREG(mode)) {
      auto created = self->create_regions(self->layout_below(parent));
      if (!created) return fail(created.error());
      data = *created;
    } else if (!S_ISDIR(mode)) {
      return fail(ErrorCode::kPermissionDenied, "podfs holds only files and directories");
    }
    std::unique_lock lock(self->mutex);
    Node* dir = self->find(parent);
    Status refused;
    if (dir == nullptr || !dir->is_dir()) refused = fail(ErrorCode::kNotFound, "no such directory");
    else if (dir->children.count(name)) refused = fail(ErrorCode::kAlreadyExists, "exists");
    if (!refused) {
      lock.unlock();
      if (data) self->delete_regions(*data);
      return fail(refused.error());
    }
    Node& node = self->add_node(parent, mode, fuse_req_ctx(req));
    node.data = std::move(data);
    if (S_ISDIR(mode)) ++dir->nlink;
    if (dir->mode & S_ISGID) node.gid = dir->gid;
    dir->children.emplace(name, node.ino);
    dir->mtime = dir->ctime = now();
    return &node;
  }

  static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    Impl* self = of(req);
    auto node = make_child(self, req, parent, name, S_IFDIR | (mode & 07777));
    if (!node) return (void)fuse_reply_err(req, error_code_errno(node.error().code()));
    std::lock_guard lock(self->mutex);
    fuse_entry_param e = self->entry_of(**node);
    fuse_reply_entry(req, &e);
  }

  static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
    Impl* self = of(req);
    auto node = make_child(self, req, parent, name, mode);
    if (!node) return (void)fuse_reply_err(req, error_code_errno(node.error().code()));
    std::lock_guard lock(self->mutex);
    fuse_entry_param e = self->entry_of(**node);
    fuse_reply_entry(req, &e);
  }

  static void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                        fuse_file_info* fi) {
    Impl* self = of(req);
    auto node = make_child(self, req, parent, name, S_IFREG | (mode & 07777));
    if (!node) return (void)fuse_reply_err(req, error_code_errno(node.error().code()));
    std::lock_guard lock(self->mutex);
    ++(*node)->opens;
    fi->keep_cache = 1;
    fuse_entry_param e = self->entry_of(**node);
    fuse_reply_create(req, &e, fi);
  }

  static void remove_child(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir_wanted) {
    Impl* self = of(req);
    std::unique_lock lock(self->mutex);
    Node* dir = self->find(parent);
    if (dir == nullptr) return (void)fuse_reply_err(req, ENOENT);
    auto it = dir->children.find(name);
    if (it == dir->children.end()) return (void)fuse_reply_err(req, ENOENT);
    Node* node = self->find(it->second);
    if (node->is_dir() != dir_wanted) return (void)fuse_reply_err(req, dir_wanted ? ENOTDIR : EISDIR);
    if (dir_wanted && !node->children.empty()) return (void)fuse_reply_err(req, ENOTEMPTY);
    dir->children.erase(it);
    dir->mtime = dir->ctime = now();
    if (dir_wanted) {
      --dir->nlink;
      node->nlink = 0;
    } else {
      --node->nlink;
    }
    node->ctime = now();
    self->maybe_release(node, lock);
    fuse_reply_err(req, 0);
  }

  static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_child(req, parent, name, false);
  }

  static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
    remove_child(req, parent, name, true);
  }

  static void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                        const char* newname, unsigned int flags) {
    Impl* self = of(req);
    std::unique_lock lock(self->mutex);
    if (flags != 0) return (void)fuse_reply_err(req, EINVAL);
    Node* from = self->find(parent);
    Node* to = self->find(newparent);
    if (from == nullptr || to == nullptr) return (void)fuse_reply_err(req, ENOENT);
    auto it = from->children.find(name);
    if (it == from->children.end()) return (void)fuse_reply_err(req, ENOENT);
    fuse_ino_t moving = it->second;
    if (auto existing = to->children.find(newname); existing != to->children.end()) {
      Node* victim = self->find(existing->second);
      if (victim->is_dir() && !victim->children.empty()) return (void)fuse_reply_err(req, ENOTEMPTY);
      to->children.erase(existing);
      victim->nlink = 0;
      self->maybe_release(victim, lock);
      from = self->find(parent);
      to = self->find(newparent);
    }
    from->children.erase(name);
    to->children.emplace(newname, moving);
    Node* node = self->find(moving);
    if (node->is_dir() && from != to) {
      --from->nlink;
      ++to->nlink;
    }
    node->parent = newparent;
    from->mtime = to->mtime = node->ctime = now();
    fuse_reply_err(req, 0);
  }

  static void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Impl* self = of(req);
    std::unique_lock lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if (node->is_dir()) return (void)fuse_reply_err(req, EISDIR);
    if ((fi->flags & O_TRUNC) && node->size != 0) {
      auto data = node->data;
      uint64_t old_size = node->size;
      lock.unlock();
      Status truncated = self->resize(*data, old_size, 0);
      lock.lock();
      if (!truncated) return (void)fuse_reply_err(req, error_code_errno(truncated.error().code()));
      node = self->find(ino);
      if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
      node->size = 0;
    }
    ++node->opens;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  }

  static void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    Impl* self = of(req);
    std::unique_lock lock(self->mutex);
    if (Node* node = self->find(ino)) {
      if (node->opens > 0) --node->opens;
      self->maybe_release(node, lock);
    }
    fuse_reply_err(req, 0);
  }

  // The file's data and size, taken under the namespace lock so that I/O
  // runs without it.
  std::pair<std::shared_ptr<FileData>, uint64_t> file_of(fuse_ino_t ino) {
    std::lock_guard lock(mutex);
    Node* node = find(ino);
    if (node == nullptr || !node->data) return {nullptr, 0};
    return {node->data, node->size};
  }

  static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Impl* self = of(req);
    ScopedLatency timer(self->read_latency);
    auto [data, file_size] = self->file_of(ino);
    if (!data) return (void)fuse_reply_err(req, EISDIR);
    uint64_t offset = static_cast<uint64_t>(off);
    if (offset >= file_size) return (void)fuse_reply_buf(req, nullptr, 0);
    size = std::min<uint64_t>({size, file_size - offset, kMaxIo});
    pid_t requester = fuse_req_ctx(req)->pid;
    bool for_prefetch = self->prefetcher.issued_by(requester);
    if (!for_prefetch) self->recorder.saw_read(ino, offset, size, file_size);
    self->wait_for_room();
    FetchedRead fetched;
    Status status = self->fetch(*data, offset, size, fetched);
    if (!status) {
      self->io_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::error("podfs: READ inode {} {}+{}: {}", ino, offset, size, status.error().to_string());
      return (void)fuse_reply_err(req, EIO);
    }
    self->reads.fetch_add(1, std::memory_order_relaxed);
    self->bytes_read.fetch_add(size, std::memory_order_relaxed);
    if (!fetched.remote) self->zero_reads.fetch_add(1, std::memory_order_relaxed);
    if (for_prefetch) {
      self->prefetcher.fetched(requester, ino, offset, size);
    } else {
      self->cache.fetched(ino, offset, size);
    }
    self->wake_evictor_if_over_limit();
    // Straight from the receive buffers into the page cache: the kernel's
    // copy is the only one on this side.
    fuse_reply_iov(req, fetched.pieces.data(), static_cast<int>(fetched.pieces.size()));
  }

  static void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                       fuse_file_info*) {
    Impl* self = of(req);
    ScopedLatency timer(self->write_latency);
    uint64_t offset = static_cast<uint64_t>(off);
    std::unique_lock lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr || !node->data) return (void)fuse_reply_err(req, node ? EISDIR : ENOENT);
    auto data = node->data;
    if (offset + size > node->size) {
      uint64_t old_size = node->size;
      Status grown = self->resize(*data, old_size, offset + size);
      if (!grown) return (void)fuse_reply_err(req, error_code_errno(grown.error().code()));
      node->size = offset + size;
    }
    node->mtime = now();
    lock.unlock();
    auto bytes = std::span<const std::byte>(reinterpret_cast<const std::byte*>(buf), size);
    Status status = self->write_through(*data, offset, bytes);
    if (!status) {
      self->io_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::error("podfs: WRITE inode {} {}+{}: {}", ino, offset, size, status.error().to_string());
      return (void)fuse_reply_err(req, error_code_errno(status.error().code()));
    }
    self->writes.fetch_add(1, std::memory_order_relaxed);
    self->bytes_written.fetch_add(size, std::memory_order_relaxed);
    fuse_reply_write(req, size);
  }

  // Writes reach the memory pods before WRITE is answered: nothing to flush.
  static void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }
  static void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

  static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t length,
                           fuse_file_info*) {
    Impl* self = of(req);
    uint64_t offset = static_cast<uint64_t>(off);
    uint64_t len = static_cast<uint64_t>(length);
    std::unique_lock lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr || !node->data) return (void)fuse_reply_err(req, node ? EISDIR : ENOENT);
    auto data = node->data;
    if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
      uint64_t end = std::min(offset + len, node->size);
      lock.unlock();
      if (offset >= end) return (void)fuse_reply_err(req, 0);
      // Pages no longer written read as zeros locally; the pods drop theirs.
      data->written.clear(offset, end - offset);
      Status status;
      if (self->config.null_store) return self->reply_status(req, status);
      for (const StripeExtent& e : data->layout->stripes.map(offset, end - offset)) {
        status = data->pod(self->pods, e.pod).discard(data->regions[e.pod], e.pod_offset, e.length);
        if (!status) break;
      }
      return self->reply_status(req, status);
    }
    if (mode & ~FALLOC_FL_KEEP_SIZE) return (void)fuse_reply_err(req, EOPNOTSUPP);
    // Plain fallocate: space comes from the pods on first write, so only
    // the size changes (KEEP_SIZE makes it a no-op).
    if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + len > node->size) {
      Status grown = self->resize(*data, node->size, offset + len);
      if (!grown) return (void)fuse_reply_err(req, error_code_errno(grown.error().code()));
      node->size = offset + len;
      node->mtime = node->ctime = now();
    }
    fuse_reply_err(req, 0);
  }

  static void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    Impl* self = of(req);
    std::lock_guard lock(self->mutex);
    Node* node = self->find(ino);
    if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if (!node->is_dir()) return (void)fuse_reply_err(req, ENOTDIR);
    fuse_reply_open(req, fi);
  }

  static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
    Impl* self = of(req);
    std::vector<std::pair<std::string, struct stat>> entries;
    {
      std::lock_guard lock(self->mutex);
      Node* node = self->find(ino);
      if (node == nullptr) return (void)fuse_reply_err(req, ENOENT);
      entries.emplace_back(".", self->attr_of(*node));
      Node* parent = self->find(node->parent);
      entries.emplace_back("..", self->attr_of(parent ? *parent : *node));
      for (const auto& [name, child] : node->children) {
        entries.emplace_back(name, self->attr_of(*self->find(child)));
      }
    }
    std::vector<char> buffer(size);
    size_t used = 0;
    for (size_t i = static_cast<size_t>(off); i < entries.size(); ++i) {
      size_t need = fuse_add_direntry(req, buffer.data() + used, size - used, entries[i].first.c_str(),
                                      &entries[i].second, static_cast<off_t>(i + 1));
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buffer.data(), used);
  }

  static void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

  static void op_statfs(fuse_req_t req, fuse_ino_t) {
    Impl* self = of(req);
    uint64_t capacity = 0, held = 0;
    for (auto& pod : self->pods) {
      auto stats = pod->stats();
      if (!stats) continue;
      capacity += stats->capacity_pages;
      held += stats->pages_held;
    }
    struct statvfs st {};
    st.f_bsize = kPageSize;
    st.f_frsize = kPageSize;
    st.f_blocks = capacity;
    st.f_bfree = capacity - std::min(capacity, held);
    st.f_bavail = st.f_bfree;
    std::lock_guard lock(self->mutex);
    st.f_files = self->nodes.size();
    st.f_ffree = 1u << 20;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
  }

  static fuse_lowlevel_ops operations() {
    fuse_lowlevel_ops ops{};
    ops.init = op_init;
    ops.lookup = op_lookup;
    ops.forget = op_forget;
    ops.forget_multi = op_forget_multi;
    ops.getattr = op_getattr;
    ops.setattr = op_setattr;
    ops.mknod = op_mknod;
    ops.mkdir = op_mkdir;
    ops.unlink = op_unlink;
    ops.rmdir = op_rmdir;
    ops.rename = op_rename;
    ops.open = op_open;
    ops.read = op_read;
    ops.write = op_write;
    ops.flush = op_flush;
    ops.release = op_release;
    ops.fsync = op_fsync;
    ops.opendir = op_opendir;
    ops.readdir = op_readdir;
    ops.releasedir = op_releasedir;
    ops.statfs = op_statfs;
    ops.create = op_create;
    ops.fallocate = op_fallocate;
    ops.setxattr = op_setxattr;
    ops.getxattr = op_getxattr;
    ops.listxattr = op_listxattr;
    ops.removexattr = op_removexattr;
    return ops;
  }

  // Hugepage readahead on guest RAM comes as 1 MiB READs only when the
  // mount's bdi allows it (shared/FACTS.md).
  void tune_bdi() {
    std::string path = "/sys/class/bdi/" + std::to_string(major(device)) + ":" +
                       std::to_string(minor(device)) + "/read_ahead_kb";
    std::ofstream out(path);
    out << (kMaxIo / 1024) << "\n";
    if (!out) spdlog::warn("podfs: cannot raise {}: READs stay small", path);
  }

  // Ends a connection whose users never let go (a QEMU that will not die):
  // better a failed guest than a hung host.
  void abort_connection() {
    std::ofstream abort("/sys/fs/fuse/connections/" + std::to_string(minor(device)) + "/abort");
    abort << "1\n";
  }
};

Podfs::Podfs(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Podfs>> Podfs::mount(const PodfsConfig& config) {
  if (config.null_store != config.memory_pods.empty()) {
    return fail(ErrorCode::kInvalidArgument,
                config.null_store ? "podfs: a null store has no memory pods" : "podfs: no memory pods");
  }
  if (config.max_threads < 2 * Prefetcher::kThreads) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("podfs: {} FUSE threads leave too few beside {} prefetch threads",
                            config.max_threads, Prefetcher::kThreads));
  }
  auto stripes = StripeLayout::create(std::max<size_t>(1, config.memory_pods.size()), config.stripe_bytes);
  if (!stripes) return fail(stripes.error().context("podfs"));
  std::vector<size_t> every_pod(config.memory_pods.size());
  std::iota(every_pod.begin(), every_pod.end(), 0);
  auto impl = std::make_unique<Impl>(config, std::make_shared<FileLayout>(FileLayout{every_pod, *stripes}));
  if (impl->zeros.data() == nullptr) return fail_errno("podfs: mapping zero pages", errno);
  if (!config.connected_pods.empty()) {
    if (config.connected_pods.size() != config.memory_pods.size()) {
      return fail(ErrorCode::kInvalidArgument, "podfs: one connected client per memory pod");
    }
    impl->pods = config.connected_pods;
  } else {
    pods::MemoryPodClient::Options options;
    options.fabric = config.fabric;
    for (const auto& address : config.memory_pods) {
      auto client = pods::MemoryPodClient::connect(address, options);
      if (!client) return fail(client.error().context("podfs"));
      impl->pods.push_back(std::move(*client));
    }
  }

  auto root = std::make_unique<Node>();
  root->ino = FUSE_ROOT_ID;
  root->parent = FUSE_ROOT_ID;
  root->mode = S_IFDIR | 0755;
  root->nlink = 2;
  root->atime = root->mtime = root->ctime = now();
  root->lookups = 1;
  impl->nodes.emplace(FUSE_ROOT_ID, std::move(root));

  std::string options_arg = "fsname=podfs,subtype=vmpod,default_permissions";
  if (config.allow_other) options_arg += ",allow_other";
  const char* argv[] = {"podfs", "-o", options_arg.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  fuse_lowlevel_ops ops = Impl::operations();
  impl->session = fuse_session_new(&args, &ops, sizeof(ops), impl.get());
  fuse_opt_free_args(&args);  // fuse_session_new copies what it keeps
  if (impl->session == nullptr) return fail(ErrorCode::kInternal, "podfs: fuse_session_new failed");
  if (fuse_session_mount(impl->session, config.mountpoint.c_str()) != 0) {
    fuse_session_destroy(impl->session);
    return fail(ErrorCode::kUnavailable, "podfs: cannot mount on " + config.mountpoint);
  }
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] {
    fuse_loop_config* loop_config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(loop_config, raw->config.max_threads);
    fuse_loop_cfg_set_idle_threads(loop_config, 4);
    fuse_session_loop_mt(raw->session, loop_config);
    fuse_loop_cfg_destroy(loop_config);
  });
  // stat() of the mount is a GETATTR: only now is anyone there to answer it.
  struct stat st {};
  ::stat(config.mountpoint.c_str(), &st);
  impl->device = st.st_dev;
  impl->tune_bdi();
  impl->evictor = std::thread([raw] { raw->evict_loop(); });
  spdlog::info("podfs: mounted {} over {} memory pods, stripe {} KiB, cache limit {} MiB",
               config.mountpoint, config.memory_pods.size(), config.stripe_bytes >> 10,
               config.local_cache_bytes >> 20);
  return std::unique_ptr<Podfs>(new Podfs(std::move(impl)));
}

Podfs::~Podfs() {
  // First, while the session still answers the READs its threads wait for
  // and before the unmount waits for the files they hold open.
  impl_->prefetcher.stop();
  {
    std::lock_guard lock(impl_->evict_mutex);
    impl_->stopping = true;
  }
  impl_->evict_wake.notify_all();
  impl_->evictor.join();
  fuse_session_exit(impl_->session);
  // A lazy unmount: the loop ends once the last user of a file lets go.
  fuse_session_unmount(impl_->session);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::atomic<bool> ended{false};
  std::thread waiter([&] {
    impl_->loop.join();
    ended = true;
  });
  while (!ended && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!ended) {
    spdlog::warn("podfs: {} still in use after unmount, aborting its connection",
                 impl_->config.mountpoint);
    impl_->abort_connection();
  }
  waiter.join();
  fuse_session_destroy(impl_->session);
  for (auto& [ino, node] : impl_->nodes) {
    if (node->data) impl_->delete_regions(*node->data);
  }
}

const std::string& Podfs::mountpoint() const { return impl_->config.mountpoint; }

Status Podfs::drop_cache() {
  std::vector<fuse_ino_t> files;
  {
    std::lock_guard lock(impl_->mutex);
    for (const auto& [ino, node] : impl_->nodes) {
      if (node->data) files.push_back(ino);
    }
  }
  for (fuse_ino_t ino : files) {
    int rc = fuse_lowlevel_notify_inval_inode(impl_->session, ino, 0, 0);
    if (rc != 0 && rc != -ENOENT) return fail_errno("podfs: dropping the cache", -rc);
    impl_->cache.forget(ino);
  }
  return {};
}

PodfsStats Podfs::stats() const {
  PodfsStats s;
  {
    std::lock_guard lock(impl_->mutex);
    for (const auto& [ino, node] : impl_->nodes) s.files += node->data ? 1 : 0;
  }
  s.reads = impl_->reads.load();
  s.bytes_read = impl_->bytes_read.load();
  s.writes = impl_->writes.load();
  s.bytes_written = impl_->bytes_written.load();
  s.zero_reads = impl_->zero_reads.load();
  s.evictions = impl_->evictions.load();
  s.bytes_evicted = impl_->bytes_evicted.load();
  s.cached_bytes = impl_->cache.cached_bytes();
  s.cache_limit = impl_->cache.limit_bytes();
  s.io_errors = impl_->io_errors.load();
  s.read_latency = impl_->read_latency.snapshot();
  s.write_latency = impl_->write_latency.snapshot();
  Prefetcher::Counters prefetch = impl_->prefetcher.counters();
  s.prefetched_bytes = prefetch.bytes;
  s.prefetch_extents = prefetch.extents;
  s.prefetch_skipped = prefetch.skipped;
  s.prefetch_abandoned = prefetch.abandoned;
  return s;
}

Result<std::vector<pods::MemoryPodStats>> Podfs::memory_pod_stats() const {
  std::vector<std::vector<pods::RegionHandle>> regions(impl_->pods.size());
  {
    std::lock_guard lock(impl_->mutex);
    for (const auto& [ino, node] : impl_->nodes) {
      if (!node->data) continue;
      const FileData& data = *node->data;
      for (size_t i = 0; i < data.regions.size(); ++i) regions[data.layout->pods[i]].push_back(data.regions[i]);
    }
  }
  std::vector<pods::MemoryPodStats> out;
  for (size_t i = 0; i < impl_->pods.size(); ++i) {
    auto stats = impl_->pods[i]->stats(regions[i]);
    if (!stats) return fail(stats.error());
    out.push_back(std::move(*stats));
  }
  return out;
}

std::optional<std::string> Podfs::failure() const {
  for (auto& pod : impl_->pods) {
    if (!pod->alive()) return "memory pod " + pod->pod_id() + " lost: " + pod->lost_reason();
  }
  return std::nullopt;
}

std::vector<std::string> Podfs::files_on_lost_pods() const {
  std::vector<bool> lost(impl_->pods.size());
  bool any = false;
  for (size_t i = 0; i < impl_->pods.size(); ++i) any |= lost[i] = !impl_->pods[i]->alive();
  std::vector<std::string> files;
  if (!any) return files;
  std::lock_guard lock(impl_->mutex);
  for (const auto& [ino, node] : impl_->nodes) {
    if (!node->data || node->nlink == 0) continue;
    const auto& on = node->data->layout->pods;
    if (std::none_of(on.begin(), on.end(), [&](size_t pod) { return lost[pod]; })) continue;
    // The name, from each directory's entry for the node below it.
    std::string path;
    for (const Node* at = node.get(); at->ino != FUSE_ROOT_ID;) {
      const Node* parent = impl_->nodes.at(at->parent).get();
      auto entry = std::find_if(parent->children.begin(), parent->children.end(),
                                [&](const auto& child) { return child.second == at->ino; });
      if (entry == parent->children.end()) break;
      path = "/" + entry->first + path;
      at = parent;
    }
    if (!path.empty()) files.push_back(path.substr(1));
  }
  return files;
}

Result<FileRegions> Podfs::file_regions(const std::string& name) const {
  std::lock_guard lock(impl_->mutex);
  const Node* node = impl_->root_file(name);
  if (node == nullptr) return fail(ErrorCode::kNotFound, "podfs: no file named '" + name + "'");
  if (node->data->layout != impl_->default_layout) {
    return fail(ErrorCode::kWrongState, "podfs: '" + name + "' is not laid over every memory pod");
  }
  return FileRegions{node->size, node->data->regions};
}

Status Podfs::adopt_file(const std::string& name, const FileRegions& file) {
  if (file.regions.size() != impl_->pods.size()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("podfs: {} regions for {} memory pods",
                                                         file.regions.size(), impl_->pods.size()));
  }
  auto data = std::make_shared<FileData>();
  data->layout = impl_->default_layout;
  data->regions = file.regions;
  data->written.mark(0, file.size);
  fuse_ctx owner{};
  owner.uid = ::geteuid();
  owner.gid = ::getegid();
  return impl_->add_file(FUSE_ROOT_ID, name, std::move(data), file.size, &owner);
}

void Podfs::disown_regions() { impl_->owns_regions = false; }

// fsync: the kernel sends the file's dirty pages as WRITEs, which the
// serving process's threads answer.
Status write_back(const std::string& file) {
  net::Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open " + file, errno);
  if (::fsync(fd.get()) != 0) return fail_errno("fsync " + file, errno);
  return {};
}

Status Podfs::record_reads(const std::string& name, std::chrono::milliseconds window) {
  fuse_ino_t ino;
  {
    std::lock_guard lock(impl_->mutex);
    const Node* node = impl_->root_file(name);
    if (node == nullptr) return fail(ErrorCode::kNotFound, "podfs: no file named '" + name + "'");
    ino = node->ino;
  }
  return impl_->recorder.start(name, ino, window);
}

Result<ReadRecording> Podfs::recorded_reads(const std::string& name) const {
  return impl_->recorder.recording(name);
}

Status Podfs::prefetch(const std::string& name, std::vector<ReadExtent> extents) {
  for (const ReadExtent& extent : extents) {
    if (extent.offset + extent.length < extent.offset) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("podfs: prefetch extent {}+{} overflows", extent.offset, extent.length));
    }
  }
  fuse_ino_t ino;
  {
    std::lock_guard lock(impl_->mutex);
    const Node* node = impl_->root_file(name);
    if (node == nullptr) return fail(ErrorCode::kNotFound, "podfs: no file named '" + name + "'");
    ino = node->ino;
  }
  impl_->prefetcher.add(name, ino, std::move(extents));
  return {};
}

}  // namespace vmpod::cpuserver
