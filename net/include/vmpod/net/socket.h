// Stream sockets for the control plane: addresses as QEMU writes them
// ("unix:/path", "tcp:127.0.0.1:4000"), blocking framed I/O, a client that
// matches replies to requests by id, and a server with a thread per client.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <vmpod/base/result.h>
#include <vmpod/net/frame.h>

namespace vmpod::net {

struct SocketAddress {
  enum class Kind { kUnix, kTcp } kind = Kind::kUnix;
  std::string path;  // kUnix
  std::string host;  // kTcp: a literal IPv4/IPv6 address or "localhost"
  uint16_t port = 0; // kTcp; 0 when listening asks the kernel for a port

  std::string to_string() const;
};

Result<SocketAddress> parse_socket_address(std::string_view text);

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();

  int get() const { return fd_; }
  int release() { int fd = fd_; fd_ = -1; return fd; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

Result<Fd> connect_socket(const SocketAddress& address, std::chrono::milliseconds timeout);
// Binds and listens; a unix path left by a dead process is replaced.
Result<Fd> listen_socket(const SocketAddress& address);
// The address a listening socket really got (the kernel's port for tcp:...:0).
Result<SocketAddress> local_address(int listen_fd, const SocketAddress& requested);

// Blocking byte I/O, for frames and for stream protocols that are not.
// send_all sends every byte (MSG_NOSIGNAL: a vanished peer is an error, not
// SIGPIPE); an SO_SNDTIMEO that runs out is kUnavailable "timed out".
// read_exact reads exactly `length` bytes; the peer closing is kUnavailable
// "connection closed", or "connection closed mid-frame" once `started` (a
// message begun earlier) or some of these bytes came.
Status send_all(int fd, std::string_view bytes);
Status read_exact(int fd, char* out, size_t length, bool started);

Status write_frame(int fd, const Frame& frame);
// Reads one whole frame; kUnavailable on EOF, kInvalidArgument on a malformed one.
Result<Frame> read_frame(int fd, uint32_t max_body = kDefaultMaxFrameBody);

// A client connection. call() is thread-safe: callers are serialized, each
// gets the reply whose request_id matches its request. A reply carrying
// kFrameError is returned as the Error it holds.
class RpcClient {
 public:
  static Result<std::unique_ptr<RpcClient>> connect(const SocketAddress& address,
                                                    std::chrono::milliseconds timeout);
  ~RpcClient();

  // Sends {type, body}; returns the reply's body. kUnavailable when the
  // peer is gone or does not answer within the timeout; the connection is
  // then closed and every later call fails at once.
  Result<std::string> call(uint16_t type, std::string body,
                           std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool connected() const;
  int fd() const { return fd_.get(); }

 private:
  explicit RpcClient(Fd fd) : fd_(std::move(fd)) {}
  std::mutex mutex_;
  Fd fd_;
  uint64_t next_id_ = 1;
  std::atomic<bool> broken_{false};
};

// Identifies one accepted connection to a handler.
struct PeerInfo {
  uint64_t connection_id = 0;
  std::string description;  // "unix" or "tcp 127.0.0.1:5123"
};

// Accepts clients on one address; each client gets a thread that reads
// frames and answers each request with handler's result (a reply frame with
// the same type and request_id, or an error frame). A malformed frame closes
// that client's connection with a logged reason; the server keeps serving.
class RpcServer {
 public:
  using Handler = std::function<Result<std::string>(const Frame& request, const PeerInfo& peer)>;
  // Called once when a client's connection ends, for per-client cleanup.
  using DisconnectHandler = std::function<void(const PeerInfo& peer)>;

  static Result<std::unique_ptr<RpcServer>> start(const SocketAddress& address, Handler handler,
                                                  DisconnectHandler on_disconnect = {},
                                                  uint32_t max_body = kDefaultMaxFrameBody);
  ~RpcServer();  // stops accepting, closes every client, joins every thread

  const SocketAddress& address() const { return address_; }
  void stop();

 private:
  struct Impl;
  explicit RpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  SocketAddress address_;
};

}  // namespace vmpod::net
