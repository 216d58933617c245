// A QMP server that looks like QEMU's monitor to its clients (libvirt,
// qemu.qmp, socat) but serves many of them at once: one epoll thread,
// non-blocking sockets, each client a QmpSession. Commands go to a
// Dispatcher, which may answer later from any thread; events go to every
// negotiated client or to one. Bounded everywhere: clients (refused with a
// closed socket beyond the limit), input per value, unread output per client
// (a client that stops reading is disconnected), queued commands per client
// (its input is not read while the queue is full).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>
#include <vmpod/qmp/qmp_protocol.h>

namespace vmpod::qmp {

// Answers one command. Copyable; call it once, from any thread, at any time:
// after the client has gone or the server has stopped it does nothing. If
// every copy is destroyed without a call, the client gets a GenericError
// rather than waiting forever.
class Completion {
 public:
  void operator()(Reply reply) const;

  struct State;  // the server's; opaque here
  explicit Completion(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

// The server's view of the VMM. Called on the server's thread only, so it
// must not block for long (every client waits) nor call QmpServer::stop().
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  virtual void dispatch(const Request& request, Completion done) = 0;
  // Once per client that had connected, when it is gone.
  virtual void disconnected(uint64_t client_id) { (void)client_id; }
};

struct ServerOptions {
  size_t max_clients = 256;
  size_t max_value_bytes = kDefaultMaxValueBytes;
  size_t max_output_bytes = size_t{16} << 20;
  // In-band commands a client may have waiting or running before its socket
  // is no longer read: QEMU's QMP_REQ_QUEUE_LEN_MAX.
  size_t max_queued_commands = 8;
};

class QmpServer {
 public:
  // dispatcher must outlive the server.
  static Result<std::unique_ptr<QmpServer>> start(const net::SocketAddress& address,
                                                  const Greeting& greeting,
                                                  Dispatcher& dispatcher,
                                                  const ServerOptions& options = {});
  ~QmpServer();  // stop()

  // With the kernel's port for tcp:...:0.
  const net::SocketAddress& address() const;
  // For clients that connect from now on.
  void set_greeting(const Greeting& greeting);
  // {"event": name, "data": data, "timestamp": now} to every negotiated
  // client; data must be an object. Without data, no "data" member, as
  // QEMU's events without members. Any thread.
  void emit_event(std::string_view name);
  void emit_event(std::string_view name, nlohmann::json data);
  // The same to one client; dropped if it is gone or has not negotiated.
  void send_event_to(uint64_t client_id, std::string_view name);
  void send_event_to(uint64_t client_id, std::string_view name, nlohmann::json data);
  size_t client_count() const;

  // Calls on_ready(epoll events) on the server's thread whenever fd is
  // ready for `events` (EPOLLIN, EPOLLOUT): for a connection the owner keeps
  // beside its clients, such as the one to the QEMU behind them, so that
  // its traffic needs no thread of its own. on_ready must not block. Any
  // thread; after unwatch() the callback may still run once if it was
  // already running, so it should hold what it uses by shared_ptr.
  Status watch(int fd, uint32_t events, std::function<void(uint32_t)> on_ready);
  void set_watch_events(int fd, uint32_t events);
  void unwatch(int fd);
  // Closes every client and the listening socket, removes a unix socket's
  // file and joins the thread. Idempotent.
  void stop();

 private:
  struct Impl;
  explicit QmpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmpod::qmp
