// The page path: request/reply messages over a libfabric reliable-datagram
// (FI_EP_RDM) endpoint with tagged messaging. One code path serves every
// provider: "tcp" (tcp;ofi_rxm), "shm" (same host) and "verbs"
// (verbs;ofi_rxm over rdma-core on RDMA NICs).
//
// Endpoint addresses are opaque bytes exchanged over the control plane:
// a client creates its endpoint, sends local_address() to the server in a
// control hello, the server answers add_peer()'s handle and its own
// address, and the client calls connect(). Replies are matched to requests
// by tag, so many calls may be in flight from many threads at once.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod::net {

enum class FabricProvider { kTcp, kShm, kVerbs };

Result<FabricProvider> parse_fabric_provider(std::string_view name);  // "tcp", "shm", "verbs"
std::string_view fabric_provider_name(FabricProvider provider);

struct FabricConfig {
  FabricProvider provider = FabricProvider::kTcp;
  // The interface address the tcp/verbs provider binds (never the machine's
  // eth0 in tests: 127.0.0.1 or a test namespace's veth address).
  std::string node = "127.0.0.1";
  // Largest request or reply body carried; bigger ones are refused.
  size_t max_message = (1u << 20) + 4096;
};

// Server side. The handler runs on the endpoint's progress thread: it reads
// the request and writes at most reply.size() bytes of reply, returning how
// many. Handlers must not block.
class FabricServer {
 public:
  using Handler = std::function<size_t(uint64_t peer, std::span<const std::byte> request,
                                       std::span<std::byte> reply)>;

  static Result<std::unique_ptr<FabricServer>> start(const FabricConfig& config, Handler handler);
  ~FabricServer();  // stops the progress thread, closes the endpoint

  std::string local_address() const;
  // Makes a client's endpoint reachable; the handle goes back to the client
  // and arrives with each of its requests as `peer`.
  Result<uint64_t> add_peer(std::string_view peer_address);
  void remove_peer(uint64_t peer);

 private:
  struct Impl;
  explicit FabricServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class FabricClient {
 public:
  // A call whose request is posted: start() returns one and wait() collects
  // its reply, so that one thread can keep calls to several servers in
  // flight at once. It holds the reply's buffer until destroyed; destroying
  // one that was not waited for abandons it (a late reply is dropped).
  // Every pending call must be destroyed before its client.
  class PendingCall {
   public:
    PendingCall(PendingCall&& other) noexcept;
    PendingCall& operator=(PendingCall&& other) noexcept;
    ~PendingCall();

   private:
    friend class FabricClient;
    struct State;
    explicit PendingCall(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
  };

  static Result<std::unique_ptr<FabricClient>> create(const FabricConfig& config);
  ~FabricClient();  // fails every call in flight with kUnavailable, then closes

  std::string local_address() const;
  Status connect(std::string_view server_address, uint64_t handle);

  // Sends the request (gathered from iov) and waits for its reply, written
  // into `reply`; returns the reply's length. Thread-safe. kUnavailable on
  // timeout, after shutdown(), or on a transport error; the reply buffer is
  // never written after call() has returned.
  Result<size_t> call(std::span<const iovec> request, std::span<std::byte> reply,
                      std::chrono::milliseconds timeout);
  // The same with the reply scattered over several buffers (a header and
  // the caller's own data buffer), saving a copy.
  Result<size_t> call(std::span<const iovec> request, std::span<const iovec> reply,
                      std::chrono::milliseconds timeout);

  // call() in two halves. start() posts the request (gathered, as in call())
  // for a reply of at most reply_capacity bytes and returns without waiting.
  // wait() waits for the reply until `timeout` after start() and returns it
  // where it landed, in the call's receive buffer: no copy, valid while
  // `call` lives.
  Result<PendingCall> start(std::span<const iovec> request, size_t reply_capacity,
                            std::chrono::milliseconds timeout);
  Result<std::span<const std::byte>> wait(PendingCall& call);

  // Fails every call in flight and every later one with kUnavailable (a lost
  // pod): nobody waits out a timeout for a peer known to be gone.
  void shutdown(std::string reason);

 private:
  struct Impl;
  explicit FabricClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmpod::net
