// Request/reply over a libfabric FI_EP_RDM endpoint with tagged messages.
//
// Wire format (private to this file): every fabric message starts with a
// WireHeader. Requests travel with tag kRequestTag (top bit 0) and carry the
// request id, the server's handle for the client (add_peer's fi_addr_t, so
// the server needs no FI_SOURCE to answer), the body length and how many
// reply bytes the caller can take. Replies travel with tag
// kReplyBit | request_id and carry the same id and the reply length.
//
// Each side runs one progress thread reading its completion queue. The
// client receives replies into pooled buffers of its own, never into the
// caller's memory, so an abandoned call (timeout, shutdown) never lets the
// provider write into memory the caller got back: the buffer stays owned by
// the posted receive until its completion (the late reply, or FI_ECANCELED)
// arrives, then returns to the pool. A caller that waited for its reply
// reads it in place (FabricClient::wait) and gives the buffer back with its
// PendingCall, or has call() copy it out.
#include "vmpod/net/fabric.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace vmpod::net {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kReplyBit = 1ull << 63;
constexpr uint64_t kRequestTag = 0;
constexpr uint32_t kWireMagic = 0x76706662;  // "vpfb"
constexpr uint32_t kFlagHandlerError = 1;

struct WireHeader {
  uint64_t request_id;
  uint64_t peer;            // requests: the server's handle of the client
  uint32_t length;          // body bytes after the header
  uint32_t reply_capacity;  // requests: largest reply the caller takes
  uint32_t flags;           // replies: kFlagHandlerError
  uint32_t magic;
};
static_assert(sizeof(WireHeader) == 32);

constexpr size_t kServerRecvBuffers = 16;
// Reply buffers: a few up front, more while replies wait for slow receivers.
constexpr size_t kServerSendBuffers = 8;
constexpr size_t kMaxServerSendBuffers = 64;
constexpr size_t kClientIdleBuffers = 32;  // pooled bounce buffers kept when idle
// Receives of abandoned calls left posted for their late replies.
constexpr size_t kMaxAbandoned = 64;
constexpr size_t kCqBatch = 16;
// After a completion the progress thread keeps polling this long before it
// blocks in fi_cq_sread: a reply or next request usually follows within
// tens of microseconds and a blocking wake-up costs about as much again.
constexpr auto kSpinWindow = std::chrono::microseconds(50);
constexpr int kSreadTimeoutMs = 100;

std::string fi_error_text(const char* what, ssize_t ret) {
  return std::string(what) + ": " + fi_strerror(static_cast<int>(ret < 0 ? -ret : ret));
}

tl::unexpected<Error> fi_fail(ErrorCode code, const char* what, ssize_t ret) {
  return fail(code, fi_error_text(what, ret));
}

bool is_loopback(const std::string& node) {
  if (node == "localhost" || node == "::1") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, node.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  return false;
}

const char* provider_string(FabricProvider provider) {
  switch (provider) {
    case FabricProvider::kTcp: return "tcp;ofi_rxm";
    case FabricProvider::kShm: return "shm";
    case FabricProvider::kVerbs: return "verbs;ofi_rxm";
  }
  return "tcp;ofi_rxm";
}

// Every operation context handed to libfabric starts with a fi_context2, so
// providers that want FI_CONTEXT or FI_CONTEXT2 scratch space get it.
struct OpBase {
  fi_context2 ctx;
  enum class Kind { kSend, kRecv } kind;
};
static_assert(offsetof(OpBase, ctx) == 0);

OpBase* op_from_context(void* context) { return static_cast<OpBase*>(context); }

// A page-aligned buffer, registered when the provider asks for FI_MR_LOCAL.
struct Buffer {
  std::byte* data = nullptr;
  size_t size = 0;
  fid_mr* mr = nullptr;
  void* desc = nullptr;
};

// The fabric objects one side owns, closed in reverse order of opening.
class Endpoint {
 public:
  Endpoint() = default;
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  ~Endpoint() { close(); }

  Status open(const FabricConfig& config) {
    config_ = config;
    buffer_size_ = (sizeof(WireHeader) + config.max_message + 4095) & ~size_t{4095};
    const bool uses_node =
        config.provider == FabricProvider::kTcp || config.provider == FabricProvider::kVerbs;
    if (config.provider == FabricProvider::kTcp && is_loopback(config.node)) {
      // The tcp provider also lists the machine's real interfaces; pin it.
      setenv("FI_TCP_IFACE", "lo", 0);
    }
    if (config.provider == FabricProvider::kTcp) {
      // Past rxm's eager limit (16 KiB by default) a message goes by
      // rendezvous: the sender announces it and the receiver pulls the data,
      // one more round trip through both progress threads for every 1 MiB
      // page reply. Sent eagerly instead, the tcp provider places the reply
      // straight into the posted receive (rxm's dynamic receive buffers),
      // and rxm takes unexpected large messages too. Measured with 4 calls
      // of 1 MiB in flight: docs/performance.md. rxm reads the variable when
      // the process first opens libfabric; an explicit setting wins.
      setenv("FI_OFI_RXM_EAGER_LIMIT", std::to_string(buffer_size_).c_str(), 0);
    }
    fi_info* hints = fi_allocinfo();
    if (hints == nullptr) return fail(ErrorCode::kInternal, "fi_allocinfo: out of memory");
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_TAGGED;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->threading = FI_THREAD_SAFE;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    hints->fabric_attr->prov_name = strdup(provider_string(config.provider));
    const char* node = uses_node && !config.node.empty() ? config.node.c_str() : nullptr;
    int ret = fi_getinfo(FI_VERSION(1, 17), node, node != nullptr ? "0" : nullptr,
                         node != nullptr ? FI_SOURCE : 0, hints, &info_);
    fi_freeinfo(hints);
    if (ret != 0) {
      info_ = nullptr;
      return fail(ErrorCode::kUnavailable,
                  fi_error_text("fi_getinfo", ret) + " (provider " +
                      provider_string(config.provider) + ")");
    }
    mr_local_ =
        (info_->domain_attr->mr_mode & FI_MR_LOCAL) != 0 || (info_->mode & FI_LOCAL_MR) != 0;
    addr_format_ = info_->addr_format;

    if ((ret = fi_fabric(info_->fabric_attr, &fabric_, nullptr)) != 0) {
      fabric_ = nullptr;
      return fi_fail(ErrorCode::kUnavailable, "fi_fabric", ret);
    }
    if ((ret = fi_domain(fabric_, info_, &domain_, nullptr)) != 0) {
      domain_ = nullptr;
      return fi_fail(ErrorCode::kUnavailable, "fi_domain", ret);
    }
    fi_cq_attr cq_attr{};
    cq_attr.format = FI_CQ_FORMAT_TAGGED;
    cq_attr.size = 0;
    cq_attr.wait_obj = FI_WAIT_UNSPEC;
    if ((ret = fi_cq_open(domain_, &cq_attr, &cq_, nullptr)) == 0) {
      can_wait_ = true;
    } else {
      cq_ = nullptr;
      cq_attr.wait_obj = FI_WAIT_NONE;
      if ((ret = fi_cq_open(domain_, &cq_attr, &cq_, nullptr)) != 0) {
        cq_ = nullptr;
        return fi_fail(ErrorCode::kUnavailable, "fi_cq_open", ret);
      }
    }
    fi_av_attr av_attr{};
    av_attr.type = FI_AV_UNSPEC;
    if ((ret = fi_av_open(domain_, &av_attr, &av_, nullptr)) != 0) {
      av_ = nullptr;
      return fi_fail(ErrorCode::kUnavailable, "fi_av_open", ret);
    }
    if ((ret = fi_endpoint(domain_, info_, &ep_, nullptr)) != 0) {
      ep_ = nullptr;
      return fi_fail(ErrorCode::kUnavailable, "fi_endpoint", ret);
    }
    if ((ret = fi_ep_bind(ep_, &cq_->fid, FI_TRANSMIT | FI_RECV)) != 0)
      return fi_fail(ErrorCode::kUnavailable, "fi_ep_bind(cq)", ret);
    if ((ret = fi_ep_bind(ep_, &av_->fid, 0)) != 0)
      return fi_fail(ErrorCode::kUnavailable, "fi_ep_bind(av)", ret);
    if ((ret = fi_enable(ep_)) != 0) return fi_fail(ErrorCode::kUnavailable, "fi_enable", ret);

    std::string name(256, '\0');
    size_t len = name.size();
    ret = fi_getname(&ep_->fid, name.data(), &len);
    if (ret == -FI_ETOOSMALL) {
      name.resize(len);
      ret = fi_getname(&ep_->fid, name.data(), &len);
    }
    if (ret != 0) return fi_fail(ErrorCode::kUnavailable, "fi_getname", ret);
    name.resize(len);
    if (addr_format_ == FI_ADDR_STR) {
      while (!name.empty() && name.back() == '\0') name.pop_back();
    }
    address_ = std::move(name);
    spdlog::debug("fabric: {} endpoint, wait object {}, FI_MR_LOCAL {}, mode {:#x}",
                  info_->fabric_attr->prov_name, can_wait_, mr_local_, info_->mode);
    return {};
  }

  // fi_av_insert of a peer's address bytes; returns its fi_addr_t.
  Result<fi_addr_t> insert(std::string_view address) {
    std::string copy(address);  // NUL-terminated for FI_ADDR_STR
    if (addr_format_ == FI_ADDR_STR) {
      // Formatted addresses read "fi_<format>://...", like our own.
      const size_t scheme = address_.find("://");
      if (copy.find('\0') != std::string::npos || copy.size() > 4096 ||
          scheme == std::string::npos || copy.size() == scheme + 3 ||
          copy.compare(0, scheme + 3, address_, 0, scheme + 3) != 0)
        return fail(ErrorCode::kInvalidArgument, "malformed fabric address");
    } else if (copy.size() != address_.size()) {
      return fail(ErrorCode::kInvalidArgument,
                  "fabric address has " + std::to_string(copy.size()) + " bytes, expected " +
                      std::to_string(address_.size()));
    }
    fi_addr_t addr = FI_ADDR_NOTAVAIL;
    int ret = fi_av_insert(av_, copy.data(), 1, &addr, 0, nullptr);
    if (ret < 0) return fi_fail(ErrorCode::kInvalidArgument, "fi_av_insert", ret);
    if (ret != 1 || addr == FI_ADDR_NOTAVAIL)
      return fail(ErrorCode::kInvalidArgument, "fi_av_insert: address rejected");
    return addr;
  }

  Result<Buffer> allocate(size_t size = 0) {
    size = size == 0 ? buffer_size_ : (size + 4095) & ~size_t{4095};
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return fail_errno("mmap fabric buffer", errno);
    Buffer b;
    b.data = static_cast<std::byte*>(p);
    b.size = size;
    if (mr_local_) {
      int ret = fi_mr_reg(domain_, b.data, b.size, FI_SEND | FI_RECV, 0,
                          next_key_.fetch_add(1), 0, &b.mr, nullptr);
      if (ret != 0) {
        munmap(p, size);
        return fi_fail(ErrorCode::kUnavailable, "fi_mr_reg", ret);
      }
      b.desc = fi_mr_desc(b.mr);
    }
    return b;
  }

  static void free_buffer(Buffer& b) {
    if (b.mr != nullptr) fi_close(&b.mr->fid);
    if (b.data != nullptr) munmap(b.data, b.size);
    b = Buffer{};
  }

  // Only the endpoint: pending operations are discarded; their contexts and
  // buffers may be freed afterwards.
  void close_endpoint() {
    if (ep_ != nullptr) fi_close(&ep_->fid);
    ep_ = nullptr;
  }

  // The rest; every MR must be closed before.
  void close() {
    close_endpoint();
    if (av_ != nullptr) fi_close(&av_->fid);
    av_ = nullptr;
    if (cq_ != nullptr) fi_close(&cq_->fid);
    cq_ = nullptr;
    if (domain_ != nullptr) fi_close(&domain_->fid);
    domain_ = nullptr;
    if (fabric_ != nullptr) fi_close(&fabric_->fid);
    fabric_ = nullptr;
    if (info_ != nullptr) fi_freeinfo(info_);
    info_ = nullptr;
  }

  fid_ep* ep() const { return ep_; }
  fid_cq* cq() const { return cq_; }
  fid_av* av() const { return av_; }
  bool can_wait() const { return can_wait_; }
  const std::string& address() const { return address_; }
  size_t buffer_size() const { return buffer_size_; }
  const FabricConfig& config() const { return config_; }

 private:
  FabricConfig config_;
  size_t buffer_size_ = 0;
  fi_info* info_ = nullptr;
  fid_fabric* fabric_ = nullptr;
  fid_domain* domain_ = nullptr;
  fid_cq* cq_ = nullptr;
  fid_av* av_ = nullptr;
  fid_ep* ep_ = nullptr;
  bool mr_local_ = false;
  bool can_wait_ = false;
  uint32_t addr_format_ = 0;
  std::string address_;
  std::atomic<uint64_t> next_key_{1};
};

// The progress loop both sides share: poll, spin briefly after activity,
// then block in fi_cq_sread (or nap, for providers without wait objects).
// `on_entry`/`on_error` handle completions; `after_batch` runs after each
// batch; `stop` ends the loop.
template <class OnEntry, class OnError, class AfterBatch>
void run_progress(Endpoint& ep, const std::atomic<bool>& stop, std::atomic<bool>& sleeping,
                  OnEntry on_entry, OnError on_error, AfterBatch after_batch) {
  fi_cq_tagged_entry entries[kCqBatch];
  auto last_activity = Clock::now();
  unsigned error_streak = 0;
  while (!stop.load(std::memory_order_acquire)) {
    ssize_t n = fi_cq_read(ep.cq(), entries, kCqBatch);
    if (n == -FI_EAGAIN) {
      if (Clock::now() - last_activity < kSpinWindow) {
        sched_yield();
        continue;
      }
      if (ep.can_wait()) {
        sleeping.store(true, std::memory_order_seq_cst);
        if (stop.load(std::memory_order_acquire)) break;
        n = fi_cq_sread(ep.cq(), entries, kCqBatch, nullptr, kSreadTimeoutMs);
        sleeping.store(false, std::memory_order_relaxed);
        if (n == -FI_EAGAIN || n == -FI_ETIMEDOUT || n == -FI_EINTR || n == -FI_ECANCELED) continue;
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
        continue;
      }
    }
    if (n > 0) {
      error_streak = 0;
      for (ssize_t i = 0; i < n; ++i) on_entry(entries[i]);
      after_batch();
      last_activity = Clock::now();
      continue;
    }
    if (n == -FI_EAVAIL) {
      fi_cq_err_entry err{};
      ssize_t r = fi_cq_readerr(ep.cq(), &err, 0);
      if (r == 1) {
        on_error(err);
        after_batch();
        last_activity = Clock::now();
      }
      continue;
    }
    if (n < 0) {
      if (error_streak++ % 1000 == 0) spdlog::error("fabric: {}", fi_error_text("fi_cq_read", n));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

// Within one process the shm provider does not map a peer endpoint's region:
// it uses the local endpoint's own region pointer. A client endpoint closed
// while the in-process server still has a reply to it awaiting the
// receiver's response entry makes the server's progress touch freed memory
// (libfabric 1.17). So in-process shm servers publish which peers their
// replies in flight go to, and a closing client waits for its own.
struct ReplyTracker {
  std::array<std::atomic<uint64_t>, kMaxServerSendBuffers> dest;  // FI_ADDR_NOTAVAIL: idle

  ReplyTracker() {
    for (auto& d : dest) d.store(FI_ADDR_NOTAVAIL, std::memory_order_relaxed);
  }
  bool busy_for(uint64_t peer) const {
    for (const auto& d : dest)
      if (d.load(std::memory_order_acquire) == peer) return true;
    return false;
  }
};

std::mutex local_shm_mu;
std::unordered_map<std::string, const ReplyTracker*>& local_shm_servers() {
  static auto* servers = new std::unordered_map<std::string, const ReplyTracker*>();
  return *servers;
}

}  // namespace

// ---------------------------------------------------------------------------

Result<FabricProvider> parse_fabric_provider(std::string_view name) {
  if (name == "tcp") return FabricProvider::kTcp;
  if (name == "shm") return FabricProvider::kShm;
  if (name == "verbs") return FabricProvider::kVerbs;
  return fail(ErrorCode::kInvalidArgument,
              "unknown fabric provider '" + std::string(name) + "' (tcp, shm, verbs)");
}

std::string_view fabric_provider_name(FabricProvider provider) {
  switch (provider) {
    case FabricProvider::kTcp: return "tcp";
    case FabricProvider::kShm: return "shm";
    case FabricProvider::kVerbs: return "verbs";
  }
  return "tcp";
}

// ---------------------------------------------------------------------------
// Server

struct FabricServer::Impl {
  struct Op : OpBase {
    Buffer buf;
    size_t index = 0;  // send ops: slot in `replies`
  };

  Endpoint ep;
  Handler handler;
  size_t max_message = 0;
  std::vector<Op> recv_ops;
  std::deque<Op> send_ops;  // grows up to kMaxServerSendBuffers; stable addresses
  std::vector<Op*> free_sends;
  std::deque<std::pair<Op*, size_t>> pending;  // completed receives to handle
  ReplyTracker replies;
  bool registered_local = false;

  std::mutex peers_mu;  // held across a reply's validation and fi_tsend
  std::unordered_set<uint64_t> peers;

  std::atomic<bool> stop{false};
  std::atomic<bool> sleeping{false};
  std::thread thread;

  ~Impl() {
    if (registered_local) {
      std::lock_guard<std::mutex> lock(local_shm_mu);
      local_shm_servers().erase(ep.address());
    }
    stop.store(true);
    if (thread.joinable()) {
      if (ep.can_wait()) fi_cq_signal(ep.cq());
      thread.join();
    }
    ep.close_endpoint();
    for (Op& op : recv_ops) Endpoint::free_buffer(op.buf);
    for (Op& op : send_ops) Endpoint::free_buffer(op.buf);
    ep.close();
  }

  Status post_recv(Op* op) {
    for (;;) {
      ssize_t ret = fi_trecv(ep.ep(), op->buf.data, op->buf.size, op->buf.desc, FI_ADDR_UNSPEC,
                             kRequestTag, 0, &op->ctx);
      if (ret == 0) return {};
      if (ret != -FI_EAGAIN) return fi_fail(ErrorCode::kUnavailable, "fi_trecv", ret);
      poll_once();
    }
  }

  void repost(Op* op) {
    auto st = post_recv(op);
    if (!st) spdlog::error("fabric server: receive buffer lost: {}", st.error().message());
  }

  void on_entry(const fi_cq_tagged_entry& e) {
    Op* op = static_cast<Op*>(op_from_context(e.op_context));
    if (op == nullptr) return;
    if (op->kind == OpBase::Kind::kRecv) {
      pending.emplace_back(op, e.len);
    } else {
      release_send(op);
    }
  }

  void release_send(Op* op) {
    replies.dest[op->index].store(FI_ADDR_NOTAVAIL, std::memory_order_release);
    free_sends.push_back(op);
  }

  void on_error(const fi_cq_err_entry& e) {
    Op* op = static_cast<Op*>(op_from_context(e.op_context));
    if (op == nullptr) {
      spdlog::warn("fabric server: completion error: {}", fi_strerror(e.err));
      return;
    }
    if (op->kind == OpBase::Kind::kRecv) {
      if (e.err == FI_ECANCELED) return;
      if (e.err == FI_ETRUNC) {
        spdlog::warn("fabric server: dropped a request longer than {} bytes", max_message);
      } else {
        spdlog::warn("fabric server: receive failed: {}", fi_strerror(e.err));
      }
      repost(op);
    } else {
      spdlog::warn("fabric server: reply failed: {}", fi_strerror(e.err));
      release_send(op);
    }
  }

  // One non-blocking pass over the CQ (used while waiting for resources).
  void poll_once() {
    fi_cq_tagged_entry entries[kCqBatch];
    ssize_t n = fi_cq_read(ep.cq(), entries, kCqBatch);
    if (n > 0) {
      for (ssize_t i = 0; i < n; ++i) on_entry(entries[i]);
    } else if (n == -FI_EAVAIL) {
      fi_cq_err_entry err{};
      if (fi_cq_readerr(ep.cq(), &err, 0) == 1) on_error(err);
    }
  }

  Status add_send_buffer() {
    auto buf = ep.allocate();
    if (!buf) return fail(buf.error());
    Op& op = send_ops.emplace_back();
    op.kind = OpBase::Kind::kSend;
    op.buf = *buf;
    op.index = send_ops.size() - 1;
    free_sends.push_back(&op);
    return {};
  }

  // A free reply buffer: a new one while under the cap, else waits for a
  // send to complete. Null when stopping.
  Op* take_send() {
    if (free_sends.empty() && send_ops.size() < kMaxServerSendBuffers) {
      auto st = add_send_buffer();
      if (!st) spdlog::warn("fabric server: {}", st.error().message());
    }
    while (free_sends.empty() && !stop.load(std::memory_order_relaxed)) poll_once();
    if (free_sends.empty()) return nullptr;
    Op* op = free_sends.back();
    free_sends.pop_back();
    return op;
  }

  void handle_pending() {
    while (!pending.empty() && !stop.load(std::memory_order_relaxed)) {
      auto [op, len] = pending.front();
      pending.pop_front();
      handle_request(op, len);
    }
  }

  void handle_request(Op* rop, size_t len) {
    if (len < sizeof(WireHeader)) {
      spdlog::warn("fabric server: dropped a {}-byte request (shorter than its header)", len);
      repost(rop);
      return;
    }
    WireHeader req;
    std::memcpy(&req, rop->buf.data, sizeof(req));
    const size_t body = len - sizeof(WireHeader);
    if (req.magic != kWireMagic || req.length != body || body > max_message ||
        (req.request_id & kReplyBit) != 0) {
      spdlog::warn("fabric server: dropped a malformed request ({} bytes)", len);
      repost(rop);
      return;
    }
    Op* sop = take_send();
    if (sop == nullptr) return;  // stopping
    std::lock_guard<std::mutex> lock(peers_mu);
    if (!peers.contains(req.peer)) {
      spdlog::warn("fabric server: dropped a request from unknown peer {}", req.peer);
      free_sends.push_back(sop);
      repost(rop);
      return;
    }
    const size_t cap = std::min<size_t>(req.reply_capacity, max_message);
    WireHeader rep{};
    rep.request_id = req.request_id;
    rep.magic = kWireMagic;
    size_t n = 0;
    try {
      n = handler(req.peer, std::span<const std::byte>(rop->buf.data + sizeof(WireHeader), body),
                  std::span<std::byte>(sop->buf.data + sizeof(WireHeader), cap));
      if (n > cap) {
        spdlog::error("fabric server: handler returned {} bytes for a {}-byte reply", n, cap);
        n = 0;
        rep.flags = kFlagHandlerError;
      }
    } catch (const std::exception& e) {
      spdlog::error("fabric server: handler threw: {}", e.what());
      n = 0;
      rep.flags = kFlagHandlerError;
    } catch (...) {
      spdlog::error("fabric server: handler threw");
      n = 0;
      rep.flags = kFlagHandlerError;
    }
    repost(rop);
    rep.length = static_cast<uint32_t>(n);
    std::memcpy(sop->buf.data, &rep, sizeof(rep));
    replies.dest[sop->index].store(req.peer, std::memory_order_release);
    for (;;) {
      ssize_t ret = fi_tsend(ep.ep(), sop->buf.data, sizeof(WireHeader) + n, sop->buf.desc,
                             req.peer, kReplyBit | req.request_id, &sop->ctx);
      if (ret == 0) return;
      if (ret != -FI_EAGAIN || stop.load(std::memory_order_relaxed)) {
        spdlog::warn("fabric server: {}", fi_error_text("fi_tsend", ret));
        release_send(sop);
        return;
      }
      poll_once();
    }
  }

  void run() {
    run_progress(
        ep, stop, sleeping, [this](const fi_cq_tagged_entry& e) { on_entry(e); },
        [this](const fi_cq_err_entry& e) { on_error(e); }, [this] { handle_pending(); });
  }
};

FabricServer::FabricServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FabricServer::~FabricServer() = default;

Result<std::unique_ptr<FabricServer>> FabricServer::start(const FabricConfig& config,
                                                          Handler handler) {
  if (!handler) return fail(ErrorCode::kInvalidArgument, "fabric server: no handler");
  if (config.max_message > UINT32_MAX - 4096)
    return fail(ErrorCode::kInvalidArgument, "fabric server: max_message too large");
  auto impl = std::make_unique<Impl>();
  impl->handler = std::move(handler);
  impl->max_message = config.max_message;
  VMPOD_TRY_CTX(impl->ep.open(config), "fabric server");
  impl->recv_ops.resize(kServerRecvBuffers);
  for (Impl::Op& op : impl->recv_ops) {
    op.kind = OpBase::Kind::kRecv;
    auto buf = impl->ep.allocate();
    if (!buf) return fail(buf.error().context("fabric server"));
    op.buf = *buf;
  }
  for (size_t i = 0; i < kServerSendBuffers; ++i)
    VMPOD_TRY_CTX(impl->add_send_buffer(), "fabric server");
  for (Impl::Op& op : impl->recv_ops) VMPOD_TRY_CTX(impl->post_recv(&op), "fabric server");
  impl->thread = std::thread([p = impl.get()] { p->run(); });
  if (config.provider == FabricProvider::kShm) {
    std::lock_guard<std::mutex> lock(local_shm_mu);
    local_shm_servers()[impl->ep.address()] = &impl->replies;
    impl->registered_local = true;
  }
  return std::unique_ptr<FabricServer>(new FabricServer(std::move(impl)));
}

std::string FabricServer::local_address() const { return impl_->ep.address(); }

Result<uint64_t> FabricServer::add_peer(std::string_view peer_address) {
  std::lock_guard<std::mutex> lock(impl_->peers_mu);
  auto addr = impl_->ep.insert(peer_address);
  if (!addr) return fail(addr.error().context("fabric server: add_peer"));
  impl_->peers.insert(*addr);
  return static_cast<uint64_t>(*addr);
}

void FabricServer::remove_peer(uint64_t peer) {
  std::lock_guard<std::mutex> lock(impl_->peers_mu);
  if (impl_->peers.erase(peer) == 0) return;
  fi_addr_t addr = peer;
  int ret = fi_av_remove(impl_->ep.av(), &addr, 1, 0);
  if (ret != 0) spdlog::warn("fabric server: {}", fi_error_text("fi_av_remove", ret));
}

// ---------------------------------------------------------------------------
// Client

namespace {

struct CallState {
  enum class State { kWaiting, kDone, kFailed, kAbandoned };
  std::mutex mu;
  std::condition_variable cv;
  State state = State::kWaiting;
  bool recv_outstanding = false;  // the posted receive has not completed
  size_t len = 0;                 // received bytes, header included
  std::optional<Error> error;
};

// A call's send or receive. The receive of an abandoned call (timeout,
// shutdown) stays posted with its bounce buffer: a late reply must find a
// matching receive, or it sits unmatched in the provider and the server's
// send never completes (rendezvous-sized replies over tcp;ofi_rxm and shm
// wedged the server after a few timeouts). Cancelling and posting a small
// truncating receive instead works on tcp but deadlocks shm 1.17.
struct ClientOp : OpBase {
  std::shared_ptr<CallState> call;
  Buffer* buf = nullptr;
  std::list<ClientOp*>::iterator abandoned_pos;  // receives in `abandoned`
  bool cancel_requested = false;
};

}  // namespace

struct FabricClient::Impl {
  Endpoint ep;
  size_t max_message = 0;

  std::mutex mu;  // guards connected .. active_calls
  std::condition_variable idle_cv;
  bool connected = false;
  fi_addr_t server = FI_ADDR_UNSPEC;
  std::string server_address;
  uint64_t handle = 0;
  bool shut = false;
  std::string reason;
  std::unordered_map<uint64_t, std::shared_ptr<CallState>> inflight;
  int active_calls = 0;

  std::mutex pool_mu;
  std::vector<Buffer*> free_buffers;

  std::mutex ops_mu;
  std::unordered_set<ClientOp*> ops;  // posted sends and receives, not yet completed

  std::mutex abandoned_mu;
  std::list<ClientOp*> abandoned;  // receives of abandoned calls, oldest first

  std::atomic<uint64_t> next_id{1};
  std::atomic<bool> shut_flag{false};  // `shut`, for the posting loops
  std::atomic<bool> stop{false};
  std::atomic<bool> sleeping{false};
  std::thread thread;

  ~Impl() {
    {
      std::unique_lock<std::mutex> lock(mu);
      fail_all_locked("fabric client closed");
      idle_cv.wait(lock, [this] { return active_calls == 0; });
    }
    wait_for_local_shm_server();
    stop.store(true);
    if (thread.joinable()) {
      if (ep.can_wait()) fi_cq_signal(ep.cq());
      thread.join();
    }
    ep.close_endpoint();
    for (ClientOp* op : ops) {
      if (op->buf != nullptr) release(op->buf);
      delete op;
    }
    ops.clear();
    abandoned.clear();  // its receives were in `ops`
    for (Buffer* b : free_buffers) {
      Endpoint::free_buffer(*b);
      delete b;
    }
    free_buffers.clear();
    ep.close();
  }

  // See ReplyTracker: an in-process shm server must be done with its replies
  // to this endpoint before the endpoint's region goes away.
  void wait_for_local_shm_server() {
    if (ep.config().provider != FabricProvider::kShm || !connected) return;
    std::lock_guard<std::mutex> lock(local_shm_mu);
    auto it = local_shm_servers().find(server_address);
    if (it == local_shm_servers().end()) return;
    const auto deadline = Clock::now() + std::chrono::seconds(1);
    while (it->second->busy_for(handle) && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

  void fail_all_locked(const std::string& why) {
    if (!shut) {
      shut = true;
      shut_flag.store(true);
      reason = why;
    }
    for (auto& [id, call] : inflight) {
      std::lock_guard<std::mutex> lock(call->mu);
      if (call->state == CallState::State::kWaiting) {
        call->state = CallState::State::kFailed;
        call->error = Error(ErrorCode::kUnavailable, "fabric client shut down: " + reason);
        call->cv.notify_all();
      }
    }
  }

  Result<Buffer*> acquire() {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (!free_buffers.empty()) {
        Buffer* b = free_buffers.back();
        free_buffers.pop_back();
        return b;
      }
    }
    auto b = ep.allocate();
    if (!b) return fail(b.error());
    return new Buffer(*b);
  }

  void release(Buffer* b) {
    {
      std::lock_guard<std::mutex> lock(pool_mu);
      if (free_buffers.size() < kClientIdleBuffers) {
        free_buffers.push_back(b);
        return;
      }
    }
    Endpoint::free_buffer(*b);
    delete b;
  }

  void track(ClientOp* op) {
    std::lock_guard<std::mutex> lock(ops_mu);
    ops.insert(op);
  }
  void untrack(ClientOp* op) {
    std::lock_guard<std::mutex> lock(ops_mu);
    ops.erase(op);
  }

  void wake_progress() {
    if (sleeping.load(std::memory_order_seq_cst) && ep.can_wait()) fi_cq_signal(ep.cq());
  }

  // Called with the call's mutex held, after it was marked abandoned. Past
  // kMaxAbandoned (a peer that stopped answering) the oldest is cancelled.
  void abandon(ClientOp* rop, bool cancel) {
    std::lock_guard<std::mutex> lock(abandoned_mu);
    rop->abandoned_pos = abandoned.insert(abandoned.end(), rop);
    if (cancel) cancel_locked(rop);
    if (abandoned.size() > kMaxAbandoned) {
      for (ClientOp* old : abandoned) {
        if (!old->cancel_requested) {
          cancel_locked(old);
          break;
        }
      }
    }
  }

  // An op leaves `abandoned` only on its completion, so its context is live.
  void cancel_locked(ClientOp* op) {
    op->cancel_requested = true;
    fi_cancel(&ep.ep()->fid, &op->ctx);
  }

  // err: 0 or a positive fi_errno.
  void complete(ClientOp* op, int err, size_t len) {
    untrack(op);
    std::optional<Error> error;
    if (err != 0) {
      const char* what = op->kind == OpBase::Kind::kSend ? "fabric send" : "fabric receive";
      error = Error(ErrorCode::kUnavailable, fi_error_text(what, err));
    }
    if (op->kind == OpBase::Kind::kSend) {
      release(op->buf);
      if (error) {
        std::lock_guard<std::mutex> lock(op->call->mu);
        if (op->call->state == CallState::State::kWaiting) {
          op->call->state = CallState::State::kFailed;
          op->call->error = std::move(error);
          op->call->cv.notify_all();
        }
      }
      delete op;
      return;
    }
    bool release_buf = false;
    {
      std::lock_guard<std::mutex> lock(op->call->mu);
      CallState& c = *op->call;
      c.recv_outstanding = false;
      switch (c.state) {
        case CallState::State::kWaiting:
          if (error) {
            c.state = CallState::State::kFailed;
            c.error = std::move(error);
          } else {
            c.state = CallState::State::kDone;
            c.len = len;
          }
          c.cv.notify_all();
          break;
        case CallState::State::kAbandoned:
          release_buf = true;
          break;
        case CallState::State::kDone:
        case CallState::State::kFailed: break;  // the caller releases the buffer
      }
    }
    if (release_buf) {
      if (err == 0) spdlog::debug("fabric client: dropped a late reply");
      {
        std::lock_guard<std::mutex> lock(abandoned_mu);
        abandoned.erase(op->abandoned_pos);
      }
      release(op->buf);
    }
    delete op;
  }

  void run() {
    run_progress(
        ep, stop, sleeping,
        [this](const fi_cq_tagged_entry& e) {
          if (e.op_context != nullptr)
            complete(static_cast<ClientOp*>(op_from_context(e.op_context)), 0, e.len);
        },
        [this](const fi_cq_err_entry& e) {
          if (e.op_context == nullptr) {
            spdlog::warn("fabric client: completion error: {}", fi_strerror(e.err));
            return;
          }
          complete(static_cast<ClientOp*>(op_from_context(e.op_context)),
                   e.err != 0 ? e.err : FI_EIO, 0);
        },
        [] {});
  }

  // Posts with retries on -FI_EAGAIN until the deadline.
  template <class Post>
  ssize_t post(Post post_fn, Clock::time_point deadline) {
    for (unsigned spins = 0;; ++spins) {
      ssize_t ret = post_fn();
      if (ret != -FI_EAGAIN) return ret;
      wake_progress();
      if (Clock::now() >= deadline || shut_flag.load(std::memory_order_relaxed)) return ret;
      if (spins < 64) {
        sched_yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  Result<PendingCall> start(std::span<const iovec> request, size_t reply_capacity,
                            std::chrono::milliseconds timeout);
  Result<std::span<const std::byte>> wait(PendingCall::State& pending);
  void give_up(PendingCall::State& pending, std::unique_lock<std::mutex>& call_lock);
};

// Everything a started call owns until its reply is collected or it is
// abandoned. It is in the client's in-flight table from its creation to its
// destruction.
struct FabricClient::PendingCall::State {
  FabricClient::Impl* client = nullptr;
  uint64_t id = 0;
  std::shared_ptr<CallState> call;
  ClientOp* receive = nullptr;   // posted with rx; deleted by its completion
  Buffer* rx = nullptr;          // null once handed to an abandoned receive
  bool request_posted = false;
  bool waited = false;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout{0};
  size_t reply_capacity = 0;

  ~State() {
    if (!waited) {
      std::unique_lock<std::mutex> lock(call->mu);
      client->give_up(*this, lock);
    }
    if (rx != nullptr) client->release(rx);
    std::lock_guard<std::mutex> lock(client->mu);
    client->inflight.erase(id);
    if (--client->active_calls == 0) client->idle_cv.notify_all();
  }
};

Result<FabricClient::PendingCall> FabricClient::Impl::start(std::span<const iovec> request,
                                                            size_t reply_capacity,
                                                            std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  size_t total = 0;
  for (const iovec& v : request) total += v.iov_len;
  if (total > max_message)
    return fail(ErrorCode::kInvalidArgument, "fabric request of " + std::to_string(total) +
                                                 " bytes exceeds max_message " +
                                                 std::to_string(max_message));
  const size_t cap = std::min(reply_capacity, max_message);

  auto call = std::make_shared<CallState>();
  const uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed) & ~kReplyBit;
  fi_addr_t dest;
  uint64_t peer;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (shut) return fail(ErrorCode::kUnavailable, "fabric client shut down: " + reason);
    if (!connected) return fail(ErrorCode::kWrongState, "fabric client not connected");
    dest = server;
    peer = handle;
    inflight.emplace(id, call);
    ++active_calls;
  }
  // From here the pending state leaves the in-flight table however the call ends.
  auto pending = std::make_unique<PendingCall::State>();
  pending->client = this;
  pending->id = id;
  pending->call = call;
  pending->deadline = deadline;
  pending->timeout = timeout;
  pending->reply_capacity = cap;

  auto txbuf = acquire();
  if (!txbuf) return fail(txbuf.error().context("fabric call"));
  auto rxbuf = acquire();
  if (!rxbuf) {
    release(*txbuf);
    return fail(rxbuf.error().context("fabric call"));
  }
  Buffer* tx = *txbuf;
  Buffer* rx = *rxbuf;
  pending->rx = rx;

  WireHeader hdr{};
  hdr.request_id = id;
  hdr.peer = peer;
  hdr.length = static_cast<uint32_t>(total);
  hdr.reply_capacity = static_cast<uint32_t>(cap);
  hdr.magic = kWireMagic;
  std::memcpy(tx->data, &hdr, sizeof(hdr));
  size_t off = sizeof(hdr);
  for (const iovec& v : request) {
    if (v.iov_len != 0) std::memcpy(tx->data + off, v.iov_base, v.iov_len);
    off += v.iov_len;
  }

  auto* rop = new ClientOp();
  rop->kind = OpBase::Kind::kRecv;
  rop->call = call;
  rop->buf = rx;
  call->recv_outstanding = true;
  track(rop);
  ssize_t ret = post(
      [&] {
        return fi_trecv(ep.ep(), rx->data, sizeof(WireHeader) + cap, rx->desc, FI_ADDR_UNSPEC,
                        kReplyBit | id, 0, &rop->ctx);
      },
      deadline);
  if (ret != 0) {
    call->recv_outstanding = false;  // never posted: rx stays the pending state's
    untrack(rop);
    delete rop;
    release(tx);
    if (shut_flag.load()) return fail(ErrorCode::kUnavailable, "fabric client shut down");
    if (ret == -FI_EAGAIN)
      return fail(ErrorCode::kUnavailable, "fabric call timed out posting its receive");
    return fi_fail(ErrorCode::kUnavailable, "fi_trecv", ret);
  }
  pending->receive = rop;

  auto* sop = new ClientOp();
  sop->kind = OpBase::Kind::kSend;
  sop->call = call;
  sop->buf = tx;
  track(sop);
  ret = post(
      [&] {
        return fi_tsend(ep.ep(), tx->data, sizeof(WireHeader) + total, tx->desc, dest, kRequestTag,
                        &sop->ctx);
      },
      deadline);
  pending->request_posted = ret == 0;
  if (ret != 0) {
    untrack(sop);
    delete sop;
    release(tx);
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->state == CallState::State::kWaiting) {
      call->state = CallState::State::kFailed;
      call->error = Error(ErrorCode::kUnavailable,
                          ret == -FI_EAGAIN ? "fabric call timed out posting its request"
                                            : fi_error_text("fi_tsend", ret));
    }
  } else {
    wake_progress();
  }
  return PendingCall(std::move(pending));
}

Result<std::span<const std::byte>> FabricClient::Impl::wait(PendingCall::State& pending) {
  if (pending.waited) return fail(ErrorCode::kWrongState, "fabric call already waited for");
  pending.waited = true;
  CallState& call = *pending.call;
  std::unique_lock<std::mutex> lock(call.mu);
  call.cv.wait_until(lock, pending.deadline,
                     [&] { return call.state != CallState::State::kWaiting; });

  if (call.state == CallState::State::kDone) {
    lock.unlock();
    const Buffer* rx = pending.rx;
    const size_t cap = pending.reply_capacity;
    WireHeader rep;
    if (call.len < sizeof(WireHeader))
      return fail(ErrorCode::kInternal, "fabric reply shorter than its header");
    std::memcpy(&rep, rx->data, sizeof(rep));
    const size_t body = call.len - sizeof(WireHeader);
    if (rep.magic != kWireMagic || rep.request_id != pending.id || rep.length != body || body > cap)
      return fail(ErrorCode::kInternal, "malformed fabric reply");
    if (rep.flags & kFlagHandlerError)
      return fail(ErrorCode::kInternal, "fabric server handler failed");
    return std::span<const std::byte>(rx->data + sizeof(WireHeader), body);
  }

  Error error = call.error ? *call.error
                           : Error(ErrorCode::kUnavailable,
                                   "fabric call timed out after " +
                                       std::to_string(pending.timeout.count()) + " ms");
  give_up(pending, lock);
  return fail(std::move(error));
}

// A call nobody will collect. Its receive, while posted, still owns rx and
// stays posted for a late reply (see ClientOp); its completion returns the
// buffer to the pool. Without a request sent no reply can come: cancel it.
void FabricClient::Impl::give_up(PendingCall::State& pending,
                                 std::unique_lock<std::mutex>& call_lock) {
  CallState& call = *pending.call;
  if (!call.recv_outstanding) return;  // rx is the pending state's to release
  call.state = CallState::State::kAbandoned;
  abandon(pending.receive, !pending.request_posted);
  pending.rx = nullptr;
  call_lock.unlock();
  wake_progress();
}

FabricClient::PendingCall::PendingCall(std::unique_ptr<State> state) : state_(std::move(state)) {}
FabricClient::PendingCall::PendingCall(PendingCall&& other) noexcept = default;
FabricClient::PendingCall& FabricClient::PendingCall::operator=(PendingCall&& other) noexcept =
    default;
FabricClient::PendingCall::~PendingCall() = default;

FabricClient::FabricClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FabricClient::~FabricClient() = default;

Result<std::unique_ptr<FabricClient>> FabricClient::create(const FabricConfig& config) {
  if (config.max_message > UINT32_MAX - 4096)
    return fail(ErrorCode::kInvalidArgument, "fabric client: max_message too large");
  auto impl = std::make_unique<Impl>();
  impl->max_message = config.max_message;
  VMPOD_TRY_CTX(impl->ep.open(config), "fabric client");
  impl->thread = std::thread([p = impl.get()] { p->run(); });
  return std::unique_ptr<FabricClient>(new FabricClient(std::move(impl)));
}

std::string FabricClient::local_address() const { return impl_->ep.address(); }

Status FabricClient::connect(std::string_view server_address, uint64_t handle) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->connected) return fail(ErrorCode::kWrongState, "fabric client already connected");
  auto addr = impl_->ep.insert(server_address);
  if (!addr) return fail(addr.error().context("fabric client: connect"));
  impl_->server = *addr;
  impl_->server_address = std::string(server_address);
  impl_->handle = handle;
  impl_->connected = true;
  return {};
}

Result<size_t> FabricClient::call(std::span<const iovec> request, std::span<std::byte> reply,
                                  std::chrono::milliseconds timeout) {
  iovec whole{reply.data(), reply.size()};
  return call(request, std::span<const iovec>(&whole, 1), timeout);
}

Result<size_t> FabricClient::call(std::span<const iovec> request, std::span<const iovec> reply,
                                  std::chrono::milliseconds timeout) {
  size_t capacity = 0;
  for (const iovec& v : reply) capacity += v.iov_len;
  auto pending = start(request, capacity, timeout);
  if (!pending) return fail(pending.error());
  auto body = wait(*pending);
  if (!body) return fail(body.error());
  size_t copied = 0;
  for (const iovec& v : reply) {
    size_t piece = std::min(v.iov_len, body->size() - copied);
    if (piece != 0) std::memcpy(v.iov_base, body->data() + copied, piece);
    copied += piece;
  }
  return body->size();
}

Result<FabricClient::PendingCall> FabricClient::start(std::span<const iovec> request,
                                                      size_t reply_capacity,
                                                      std::chrono::milliseconds timeout) {
  return impl_->start(request, reply_capacity, timeout);
}

Result<std::span<const std::byte>> FabricClient::wait(PendingCall& call) {
  if (!call.state_) return fail(ErrorCode::kInvalidArgument, "fabric call: nothing to wait for");
  return impl_->wait(*call.state_);
}

void FabricClient::shutdown(std::string reason) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->fail_all_locked(reason);
}

}  // namespace vmpod::net
