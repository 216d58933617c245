// A server for byte-stream protocols other than vmpod's frames (a relay of
// someone else's protocol): it accepts on one address and runs `serve` in a
// thread per client. stop() shuts every client's socket down, so their
// blocked reads and writes return at once, joins every thread and removes
// the unix socket file it made.
#pragma once

#include <functional>
#include <memory>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>

namespace vmpod::net {

class StreamServer {
 public:
  // `client_fd` stays owned by the server: serve() must not close it.
  using Serve = std::function<void(int client_fd)>;
  // Tells a client over the bound why it is closed (on the acceptor's
  // thread: it must not block).
  using Refuse = std::function<void(int client_fd, size_t clients)>;

  // Clients beyond `max_clients` are refused and closed as soon as they
  // are accepted.
  static Result<std::unique_ptr<StreamServer>> start(const SocketAddress& address, Serve serve,
                                                     size_t max_clients = 256, Refuse refuse = {});
  ~StreamServer();

  const SocketAddress& address() const;
  size_t client_count() const;
  void stop();

 private:
  struct Impl;
  explicit StreamServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmpod::net
