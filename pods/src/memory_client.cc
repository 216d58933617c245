#include <vmpod/pods/memory_client.h>

#include <poll.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include <vmpod/pods/rpc.h>

#include "memory.pb-c.h"

namespace vmpod::pods {

namespace {

ProtobufCBinaryData binary(const void* data, size_t size) {
  return ProtobufCBinaryData{size, static_cast<uint8_t*>(const_cast<void*>(data))};
}

std::string_view as_view(const ProtobufCBinaryData& data) {
  return {reinterpret_cast<const char*>(data.data), data.len};
}

Vmpod__Pods__RegionRef region_ref(const RegionHandle& region) {
  Vmpod__Pods__RegionRef ref = VMPOD__PODS__REGION_REF__INIT;
  ref.region_id = region.id;
  ref.token = binary(region.token.data(), region.token.size());
  return ref;
}

uint64_t total_length(std::span<const iovec> pieces) {
  uint64_t total = 0;
  for (const iovec& piece : pieces) total += piece.iov_len;
  return total;
}

Vmpod__Pods__VersionRef version_ref(const VersionHandle& version) {
  Vmpod__Pods__VersionRef ref = VMPOD__PODS__VERSION_REF__INIT;
  ref.version_id = version.id;
  ref.token = binary(version.token.data(), version.token.size());
  return ref;
}

Result<RegionHandle> region_from(const Vmpod__Pods__CreateRegionReply& reply) {
  if (reply.region == nullptr) return fail(ErrorCode::kInternal, "reply without a region");
  auto token = token_from(reply.region->token);
  if (!token) return fail(ErrorCode::kInternal, "malformed region: " + token.error().message());
  return RegionHandle{reply.region->region_id, *token};
}

Result<VersionDescription> version_from(const Vmpod__Pods__VersionReply& reply) {
  if (reply.version == nullptr) return fail(ErrorCode::kInternal, "reply without a version");
  auto token = token_from(reply.version->token);
  if (!token) return fail(ErrorCode::kInternal, "malformed version: " + token.error().message());
  return VersionDescription{{reply.version->version_id, *token}, reply.size, reply.pages,
                            reply.parent};
}

}  // namespace

Result<std::unique_ptr<MemoryPodClient>> MemoryPodClient::connect(const net::SocketAddress& control,
                                                                  const Options& options) {
  std::unique_ptr<MemoryPodClient> client(new MemoryPodClient());
  client->options_ = options;
  client->control_address_ = control;
  auto rpc = net::RpcClient::connect(control, options.connect_timeout);
  if (!rpc) return fail(rpc.error().context("memory pod " + control.to_string()));
  client->control_ = std::move(*rpc);

  auto fabric = net::FabricClient::create(options.fabric);
  if (!fabric) return fail(fabric.error().context("memory pod " + control.to_string()));
  client->fabric_ = std::move(*fabric);

  std::string local = client->fabric_->local_address();
  Vmpod__Pods__MemHelloRequest hello = VMPOD__PODS__MEM_HELLO_REQUEST__INIT;
  hello.fabric_address = binary(local.data(), local.size());
  auto reply = rpc_call<Vmpod__Pods__MemHelloReply>(
      *client->control_, MessageType::kMemHello, hello.base,
      vmpod__pods__mem_hello_reply__descriptor, options.connect_timeout);
  if (!reply) return fail(reply.error().context("memory pod " + control.to_string()));
  if (std::string_view((*reply)->provider) != net::fabric_provider_name(options.fabric.provider)) {
    return fail(ErrorCode::kInvalidArgument,
                "memory pod " + control.to_string() + " serves fabric provider " +
                    (*reply)->provider + ", not " +
                    std::string(net::fabric_provider_name(options.fabric.provider)));
  }
  auto connected = client->fabric_->connect(as_view((*reply)->fabric_address), (*reply)->handle);
  if (!connected) return fail(connected.error().context("memory pod " + control.to_string()));
  client->pod_id_ = (*reply)->pod_id;
  client->watcher_ = std::thread([raw = client.get()] { raw->watch(); });
  return client;
}

MemoryPodClient::~MemoryPodClient() {
  stopping_ = true;
  if (watcher_.joinable()) watcher_.join();
  if (fabric_) fabric_->shutdown("client closed");
}

Status MemoryPodClient::check_alive() const {
  if (lost_) return fail(ErrorCode::kUnavailable, "lost: " + lost_reason());
  return {};
}

std::string MemoryPodClient::lost_reason() const {
  std::lock_guard lock(lost_mutex_);
  return lost_reason_;
}

void MemoryPodClient::mark_lost(std::string reason) {
  {
    std::lock_guard lock(lost_mutex_);
    if (lost_) return;
    lost_reason_ = reason;
    lost_ = true;
  }
  spdlog::error("memory pod {} ({}) lost: {}", pod_id_, control_address_.to_string(), reason);
  fabric_->shutdown("memory pod " + pod_id_ + " lost: " + reason);
}

// A dead pod process closes its control socket at once; a hung one stops
// answering heartbeats. Either way podfs must fail fast, not hang QEMU.
void MemoryPodClient::watch() {
  auto next_heartbeat = std::chrono::steady_clock::now() + options_.heartbeat_interval;
  while (!stopping_ && !lost_) {
    pollfd pfd{control_->fd(), POLLRDHUP, 0};
    int ready = ::poll(&pfd, 1, 100);
    if (ready > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) {
      mark_lost("control connection closed");
      return;
    }
    if (std::chrono::steady_clock::now() < next_heartbeat) continue;
    Vmpod__Pods__Empty ping = VMPOD__PODS__EMPTY__INIT;
    auto pong = rpc_call<Vmpod__Pods__Empty>(*control_, MessageType::kMemPing, ping.base,
                                             vmpod__pods__empty__descriptor,
                                             options_.heartbeat_interval * 3);
    if (!pong) {
      mark_lost(pong.error().message());
      return;
    }
    next_heartbeat = std::chrono::steady_clock::now() + options_.heartbeat_interval;
  }
}

Result<RegionHandle> MemoryPodClient::create_region(uint64_t size, const std::string& owner) {
  Vmpod__Pods__CreateRegionRequest request = VMPOD__PODS__CREATE_REGION_REQUEST__INIT;
  request.size = size;
  request.owner = const_cast<char*>(owner.c_str());
  return region_call(MessageType::kMemCreateRegion, request.base);
}

Result<RegionHandle> MemoryPodClient::region_call(MessageType type,
                                                  const ProtobufCMessage& request) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  auto reply = rpc_call<Vmpod__Pods__CreateRegionReply>(
      *control_, type, request, vmpod__pods__create_region_reply__descriptor, options_.io_timeout);
  if (!reply) return fail(reply.error());
  auto region = region_from(**reply);
  if (!region) return fail(region.error().context("memory pod " + pod_id_));
  return region;
}

Status MemoryPodClient::resize_region(const RegionHandle& region, uint64_t size) {
  Vmpod__Pods__RegionRef ref = region_ref(region);
  Vmpod__Pods__ResizeRegionRequest request = VMPOD__PODS__RESIZE_REGION_REQUEST__INIT;
  request.region = &ref;
  request.size = size;
  auto reply = rpc_call<Vmpod__Pods__Empty>(*control_, MessageType::kMemResizeRegion, request.base,
                                            vmpod__pods__empty__descriptor, options_.io_timeout);
  if (!reply) return fail(reply.error());
  return {};
}

Status MemoryPodClient::delete_region(const RegionHandle& region) {
  Vmpod__Pods__RegionRef ref = region_ref(region);
  Vmpod__Pods__DeleteRegionRequest request = VMPOD__PODS__DELETE_REGION_REQUEST__INIT;
  request.region = &ref;
  auto reply = rpc_call<Vmpod__Pods__Empty>(*control_, MessageType::kMemDeleteRegion, request.base,
                                            vmpod__pods__empty__descriptor, options_.io_timeout);
  if (!reply) return fail(reply.error());
  return {};
}

Result<VersionDescription> MemoryPodClient::freeze_region(const RegionHandle& region) {
  Vmpod__Pods__RegionRef ref = region_ref(region);
  Vmpod__Pods__FreezeRegionRequest request = VMPOD__PODS__FREEZE_REGION_REQUEST__INIT;
  request.region = &ref;
  return version_call(MessageType::kMemFreezeRegion, request.base);
}

Result<RegionHandle> MemoryPodClient::fork_region(const VersionHandle& version,
                                                  const std::string& owner) {
  Vmpod__Pods__VersionRef ref = version_ref(version);
  Vmpod__Pods__ForkRegionRequest request = VMPOD__PODS__FORK_REGION_REQUEST__INIT;
  request.version = &ref;
  request.owner = const_cast<char*>(owner.c_str());
  return region_call(MessageType::kMemForkRegion, request.base);
}

Status MemoryPodClient::release_version(const VersionHandle& version) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  Vmpod__Pods__VersionRef ref = version_ref(version);
  Vmpod__Pods__ReleaseVersionRequest request = VMPOD__PODS__RELEASE_VERSION_REQUEST__INIT;
  request.version = &ref;
  auto reply = rpc_call<Vmpod__Pods__Empty>(*control_, MessageType::kMemReleaseVersion,
                                            request.base, vmpod__pods__empty__descriptor,
                                            options_.io_timeout);
  if (!reply) return fail(reply.error());
  return {};
}

Result<VersionDescription> MemoryPodClient::describe_version(const VersionHandle& version) {
  Vmpod__Pods__VersionRef ref = version_ref(version);
  Vmpod__Pods__DescribeVersionRequest request = VMPOD__PODS__DESCRIBE_VERSION_REQUEST__INIT;
  request.version = &ref;
  return version_call(MessageType::kMemDescribeVersion, request.base);
}

Result<VersionDescription> MemoryPodClient::version_call(MessageType type,
                                                         const ProtobufCMessage& request) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  auto reply = rpc_call<Vmpod__Pods__VersionReply>(
      *control_, type, request, vmpod__pods__version_reply__descriptor, options_.io_timeout);
  if (!reply) return fail(reply.error());
  auto version = version_from(**reply);
  if (!version) return fail(version.error().context("memory pod " + pod_id_));
  return version;
}

Result<MemoryPodStats> MemoryPodClient::stats(std::span<const RegionHandle> regions) {
  std::vector<Vmpod__Pods__RegionRef> refs;
  for (const RegionHandle& region : regions) refs.push_back(region_ref(region));
  std::vector<Vmpod__Pods__RegionRef*> ref_pointers;
  for (auto& ref : refs) ref_pointers.push_back(&ref);
  Vmpod__Pods__MemStatsRequest request = VMPOD__PODS__MEM_STATS_REQUEST__INIT;
  request.n_regions = ref_pointers.size();
  request.regions = ref_pointers.data();
  auto reply = rpc_call<Vmpod__Pods__MemStatsReply>(*control_, MessageType::kMemStats,
                                                    request.base,
                                                    vmpod__pods__mem_stats_reply__descriptor,
                                                    options_.io_timeout);
  if (!reply) return fail(reply.error());
  return memory_pod_stats_from(**reply);
}

Result<MemoryPodClient::PendingPageIo> MemoryPodClient::start_page_call(
    PageOp op, const RegionHandle& region, uint64_t offset, uint64_t length,
    std::span<const iovec> data) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  if (op != PageOp::kDiscard && length > kMaxPageIo) {
    return fail(ErrorCode::kInvalidArgument, "page i/o of " + std::to_string(length) + " bytes exceeds the limit");
  }
  PageRequest request{};
  request.op = static_cast<uint8_t>(op);
  request.length = static_cast<uint32_t>(length);
  request.region_id = region.id;
  request.offset = offset;
  request.token = region.token;
  std::vector<iovec> request_iov{{&request, sizeof(request)}};
  request_iov.insert(request_iov.end(), data.begin(), data.end());
  const uint32_t read_length = op == PageOp::kRead ? static_cast<uint32_t>(length) : 0;
  auto call = fabric_->start(request_iov, sizeof(PageReply) + read_length, options_.io_timeout);
  if (!call) {
    if (call.error().code() == ErrorCode::kUnavailable && !lost_) mark_lost(call.error().message());
    return fail(call.error().context("memory pod " + pod_id_));
  }
  return PendingPageIo(std::move(*call), read_length);
}

Result<std::span<const std::byte>> MemoryPodClient::finish_read(PendingPageIo& io) {
  auto got = fabric_->wait(io.call_);
  if (!got) {
    if (got.error().code() == ErrorCode::kUnavailable && !lost_) mark_lost(got.error().message());
    return fail(got.error().context("memory pod " + pod_id_));
  }
  PageReply reply;
  if (got->size() < sizeof(reply)) return fail(ErrorCode::kInternal, "memory pod " + pod_id_ + ": short page reply");
  std::memcpy(&reply, got->data(), sizeof(reply));
  VMPOD_TRY_CTX(decode_status(reply.status, "page request"), "memory pod " + pod_id_);
  if (reply.length != io.read_length_ || got->size() != sizeof(reply) + io.read_length_) {
    return fail(ErrorCode::kInternal, "memory pod " + pod_id_ + ": page reply of wrong length");
  }
  return got->subspan(sizeof(reply));
}

Status MemoryPodClient::finish(PendingPageIo& io) {
  auto data = finish_read(io);
  if (!data) return fail(data.error());
  return {};
}

Result<MemoryPodClient::PendingPageIo> MemoryPodClient::start_read(const RegionHandle& region,
                                                                   uint64_t offset, uint64_t length) {
  return start_page_call(PageOp::kRead, region, offset, length, {});
}

Result<MemoryPodClient::PendingPageIo> MemoryPodClient::start_write(const RegionHandle& region,
                                                                    uint64_t offset,
                                                                    std::span<const iovec> data) {
  return start_page_call(PageOp::kWrite, region, offset, total_length(data), data);
}

Status MemoryPodClient::read(const RegionHandle& region, uint64_t offset, std::span<std::byte> out) {
  auto io = start_read(region, offset, out.size());
  if (!io) return fail(io.error());
  auto data = finish_read(*io);
  if (!data) return fail(data.error());
  std::memcpy(out.data(), data->data(), data->size());
  return {};
}

Status MemoryPodClient::write(const RegionHandle& region, uint64_t offset,
                              std::span<const std::byte> data) {
  iovec piece{const_cast<std::byte*>(data.data()), data.size()};
  auto io = start_write(region, offset, std::span<const iovec>(&piece, 1));
  if (!io) return fail(io.error());
  return finish(*io);
}

Status MemoryPodClient::discard(const RegionHandle& region, uint64_t offset, uint64_t length) {
  if (length > UINT32_MAX) return fail(ErrorCode::kInvalidArgument, "discard range too large");
  auto io = start_page_call(PageOp::kDiscard, region, offset, length, {});
  if (!io) return fail(io.error());
  return finish(*io);
}

}  // namespace vmpod::pods
