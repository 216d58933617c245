#include <vmpod/memserver/memserver.h>

#include <cstring>
#include <map>
#include <mutex>

#include <spdlog/spdlog.h>

#include <vmpod/net/message.h>
#include <vmpod/pods/protocol.h>
#include <vmpod/pods/rpc.h>

#include "memory.pb-c.h"

namespace vmpod::memserver {

using pods::MessageType;
using pods::PageOp;
using pods::PageReply;

namespace {

// The token of a RegionRef or a VersionRef.
template <class Ref>
Result<RegionToken> token_of(const Ref* ref) {
  if (ref == nullptr) return fail(ErrorCode::kInvalidArgument, "missing reference");
  auto token = pods::token_from(ref->token);
  if (!token) return fail(token.error().context("malformed reference"));
  return token;
}

std::string pack_region(const RegionInfo& region) {
  Vmpod__Pods__RegionRef ref = VMPOD__PODS__REGION_REF__INIT;
  ref.region_id = region.id;
  ref.token = {region.token.size(), const_cast<uint8_t*>(region.token.data())};
  Vmpod__Pods__CreateRegionReply reply = VMPOD__PODS__CREATE_REGION_REPLY__INIT;
  reply.region = &ref;
  return net::pack_message(reply.base);
}

std::string pack_version(const VersionInfo& version) {
  Vmpod__Pods__VersionRef ref = VMPOD__PODS__VERSION_REF__INIT;
  ref.version_id = version.id;
  ref.token = {version.token.size(), const_cast<uint8_t*>(version.token.data())};
  Vmpod__Pods__VersionReply reply = VMPOD__PODS__VERSION_REPLY__INIT;
  reply.version = &ref;
  reply.size = version.size;
  reply.pages = version.pages_held;
  reply.parent = version.parent;
  return net::pack_message(reply.base);
}

}  // namespace

struct Memserver::Impl {
  MemserverConfig config;
  PageStore store;
  std::unique_ptr<net::FabricServer> fabric;
  std::unique_ptr<net::RpcServer> control;
  std::mutex peers_mutex;
  std::multimap<uint64_t, uint64_t> peers;  // control connection -> fabric handle

  explicit Impl(const MemserverConfig& c) : config(c), store(c.capacity_bytes) {}

  // Runs on the fabric progress thread: it must not block.
  size_t serve_page(std::span<const std::byte> bytes, std::span<std::byte> reply_bytes) {
    PageReply reply{0, 0};
    auto request = pods::parse_page_request(bytes);
    Status status;
    if (!request) {
      spdlog::warn("{}: dropping page request: {}", config.pod_id, request.error().message());
      status = fail(request.error());
    } else {
      switch (static_cast<PageOp>(request->op)) {
        case PageOp::kRead:
          if (reply_bytes.size() < sizeof(reply) + request->length) {
            status = fail(ErrorCode::kInvalidArgument, "read larger than the reply buffer");
            break;
          }
          status = store.read(request->region_id, request->token, request->offset,
                              reply_bytes.subspan(sizeof(reply), request->length));
          if (status) reply.length = request->length;
          break;
        case PageOp::kWrite:
          status = store.write(request->region_id, request->token, request->offset,
                               bytes.subspan(sizeof(pods::PageRequest), request->length));
          break;
        case PageOp::kDiscard:
          status = store.discard(request->region_id, request->token, request->offset,
                                 request->length);
          break;
      }
    }
    reply.status = pods::encode_status(status);
    std::memcpy(reply_bytes.data(), &reply, sizeof(reply));
    return sizeof(reply) + reply.length;
  }

  Result<std::string> hello(std::string_view body, const net::PeerInfo& peer) {
    auto request = net::unpack<Vmpod__Pods__MemHelloRequest>(
        vmpod__pods__mem_hello_request__descriptor, body);
    if (!request) return fail(request.error());
    auto handle = fabric->add_peer(std::string_view(
        reinterpret_cast<const char*>((*request)->fabric_address.data),
        (*request)->fabric_address.len));
    if (!handle) return fail(handle.error());
    {
      std::lock_guard lock(peers_mutex);
      peers.emplace(peer.connection_id, *handle);
    }
    std::string address = fabric->local_address();
    std::string provider(net::fabric_provider_name(config.fabric.provider));
    Vmpod__Pods__MemHelloReply reply = VMPOD__PODS__MEM_HELLO_REPLY__INIT;
    reply.fabric_address = {address.size(), reinterpret_cast<uint8_t*>(address.data())};
    reply.handle = *handle;
    reply.pod_id = config.pod_id.data();
    reply.provider = provider.data();
    spdlog::info("{}: client {} joined ({})", config.pod_id, *handle, peer.description);
    return net::pack_message(reply.base);
  }

  Result<std::string> create_region(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__CreateRegionRequest>(
        vmpod__pods__create_region_request__descriptor, body);
    if (!request) return fail(request.error());
    auto region = store.create_region((*request)->size, (*request)->owner);
    if (!region) return fail(region.error());
    spdlog::info("{}: region {} of {} bytes for {}", config.pod_id, region->id, region->size,
                 region->owner);
    return pack_region(*region);
  }

  Result<std::string> resize_region(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__ResizeRegionRequest>(
        vmpod__pods__resize_region_request__descriptor, body);
    if (!request) return fail(request.error());
    auto token = token_of((*request)->region);
    if (!token) return fail(token.error());
    VMPOD_TRY_CTX(store.resize_region((*request)->region->region_id, *token, (*request)->size),
                  "resize");
    return pods::empty_message();
  }

  Result<std::string> delete_region(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__DeleteRegionRequest>(
        vmpod__pods__delete_region_request__descriptor, body);
    if (!request) return fail(request.error());
    auto token = token_of((*request)->region);
    if (!token) return fail(token.error());
    VMPOD_TRY_CTX(store.delete_region((*request)->region->region_id, *token), "delete");
    spdlog::info("{}: region {} deleted", config.pod_id, (*request)->region->region_id);
    return pods::empty_message();
  }

  Result<std::string> freeze_region(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__FreezeRegionRequest>(
        vmpod__pods__freeze_region_request__descriptor, body);
    if (!request) return fail(request.error());
    auto token = token_of((*request)->region);
    if (!token) return fail(token.error());
    auto version = store.freeze_region((*request)->region->region_id, *token);
    if (!version) return fail(version.error().context("freeze"));
    spdlog::info("{}: region {} frozen as version {} ({} pages)", config.pod_id,
                 (*request)->region->region_id, version->id, version->pages_held);
    return pack_version(*version);
  }

  Result<std::string> fork_region(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__ForkRegionRequest>(
        vmpod__pods__fork_region_request__descriptor, body);
    if (!request) return fail(request.error());
    auto token = token_of((*request)->version);
    if (!token) return fail(token.error());
    auto region = store.fork_region((*request)->version->version_id, *token, (*request)->owner);
    if (!region) return fail(region.error().context("fork"));
    spdlog::info("{}: region {} forked from version {} for {}", config.pod_id, region->id,
                 (*request)->version->version_id, region->owner);
    return pack_region(*region);
  }

  Result<std::string> release_version(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__ReleaseVersionRequest>(
        vmpod__pods__release_version_request__descriptor, body);
    if (!request) return fail(request.error());
    auto token = token_of((*request)->version);
    if (!token) return fail(token.error());
    VMPOD_TRY_CTX(store.release_version((*request)->version->version_id, *token), "release");
    spdlog::info("{}: version {} released", config.pod_id, (*request)->version->version_id);
    return pods::empty_message();
  }

  Result<std::string> describe_version(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__DescribeVersionRequest>(
        vmpod__pods__describe_version_request__descriptor, body);
    if (!request) return fail(request.error());
    auto token = token_of((*request)->version);
    if (!token) return fail(token.error());
    auto version = store.version_info((*request)->version->version_id, *token);
    if (!version) return fail(version.error().context("describe"));
    return pack_version(*version);
  }

  Result<std::string> stats(std::string_view body) {
    auto request = net::unpack<Vmpod__Pods__MemStatsRequest>(vmpod__pods__mem_stats_request__descriptor, body);
    if (!request) return fail(request.error());
    pods::MemoryPodStats stats = store.stats();
    stats.pod_id = config.pod_id;
    for (size_t i = 0; i < (*request)->n_regions; ++i) {
      auto token = token_of((*request)->regions[i]);
      if (!token) continue;
      auto region = store.region_info((*request)->regions[i]->region_id, *token);
      if (region) stats.region_pages += region->pages_held;
    }
    pods::MemStatsMessage reply(stats);
    return net::pack_message(reply.message.base);
  }

  Result<std::string> handle(const net::Frame& frame, const net::PeerInfo& peer) {
    switch (static_cast<MessageType>(frame.type)) {
      case MessageType::kMemHello: return hello(frame.body, peer);
      case MessageType::kMemCreateRegion: return create_region(frame.body);
      case MessageType::kMemResizeRegion: return resize_region(frame.body);
      case MessageType::kMemDeleteRegion: return delete_region(frame.body);
      case MessageType::kMemFreezeRegion: return freeze_region(frame.body);
      case MessageType::kMemForkRegion: return fork_region(frame.body);
      case MessageType::kMemReleaseVersion: return release_version(frame.body);
      case MessageType::kMemDescribeVersion: return describe_version(frame.body);
      case MessageType::kMemStats: return stats(frame.body);
      case MessageType::kMemPing: return pods::empty_message();
      default:
        return fail(ErrorCode::kInvalidArgument,
                    "unknown message type " + std::to_string(frame.type));
    }
  }

  // A client's fabric handle dies with its control connection.
  void disconnected(const net::PeerInfo& peer) {
    std::lock_guard lock(peers_mutex);
    auto [first, last] = peers.equal_range(peer.connection_id);
    for (auto it = first; it != last; ++it) fabric->remove_peer(it->second);
    peers.erase(first, last);
  }
};

Memserver::Memserver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Memserver::~Memserver() {
  // Control first: no new client may join a fabric endpoint being torn down.
  impl_->control.reset();
  impl_->fabric.reset();
}

Result<std::unique_ptr<Memserver>> Memserver::start(const MemserverConfig& config) {
  auto impl = std::make_unique<Impl>(config);
  Impl* raw = impl.get();
  auto fabric = net::FabricServer::start(
      config.fabric, [raw](uint64_t, std::span<const std::byte> request, std::span<std::byte> reply) {
        return raw->serve_page(request, reply);
      });
  if (!fabric) return fail(fabric.error().context(config.pod_id));
  impl->fabric = std::move(*fabric);
  auto control = net::RpcServer::start(
      config.control,
      [raw](const net::Frame& frame, const net::PeerInfo& peer) { return raw->handle(frame, peer); },
      [raw](const net::PeerInfo& peer) { raw->disconnected(peer); });
  if (!control) return fail(control.error().context(config.pod_id));
  impl->control = std::move(*control);
  spdlog::info("{}: serving {} MiB on {} ({} fabric)", config.pod_id,
               config.capacity_bytes >> 20, impl->control->address().to_string(),
               net::fabric_provider_name(config.fabric.provider));
  return std::unique_ptr<Memserver>(new Memserver(std::move(impl)));
}

const net::SocketAddress& Memserver::control_address() const { return impl_->control->address(); }

PageStore& Memserver::store() { return impl_->store; }

}  // namespace vmpod::memserver
