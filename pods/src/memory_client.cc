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

uint64_t total_length(std::span<const iovec> pieces) {
  uint64_t total = 0;
  for (const iovec& piece : pieces) total += piece.iov_len;
  return total;
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
  client->regions_ = std::make_unique<RegionControl>(*client->control_, options.io_timeout);

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
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  return with_pod(regions_->create_region(size, owner));
}

Status MemoryPodClient::resize_region(const RegionHandle& region, uint64_t size) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  return with_pod(regions_->resize_region(region, size));
}

Status MemoryPodClient::delete_region(const RegionHandle& region) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  return with_pod(regions_->delete_region(region));
}

Result<VersionDescription> MemoryPodClient::freeze_region(const RegionHandle& region) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  return with_pod(regions_->freeze_region(region));
}

Result<RegionHandle> MemoryPodClient::fork_region(const VersionHandle& version, const std::string& owner) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  return with_pod(regions_->fork_region(version, owner));
}

Status MemoryPodClient::release_version(const VersionHandle& version) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  return with_pod(regions_->release_version(version));
}

Result<VersionDescription> MemoryPodClient::describe_version(const VersionHandle& version) {
  VMPOD_TRY_CTX(check_alive(), "memory pod " + pod_id_);
  return with_pod(regions_->describe_version(version));
}

Result<MemoryPodStats> MemoryPodClient::stats(std::span<const RegionHandle> regions) {
  return with_pod(regions_->stats(regions));
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
