#include <vmpod/net/socket.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstddef>
#include <cstring>
#include <exception>
#include <list>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/net/message.h>

namespace vmpod::net {
namespace {

using Clock = std::chrono::steady_clock;
// No deadline means block until the peer acts or the socket is shut down.
using Deadline = std::optional<Clock::time_point>;

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t length = 0;

  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  int family() const { return storage.ss_family; }
};

bool is_ipv4(const std::string& host) {
  in_addr addr;
  return ::inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

bool is_ipv6(const std::string& host) {
  in6_addr addr;
  return ::inet_pton(AF_INET6, host.c_str(), &addr) == 1;
}

std::string host_port(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

// Hosts are literals (or "localhost") so that no call here ever waits on DNS.
Result<SockAddr> to_sockaddr(const SocketAddress& address) {
  SockAddr out;
  if (address.kind == SocketAddress::Kind::kUnix) {
    auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
    if (address.path.empty() || address.path.size() >= sizeof(un->sun_path) ||
        address.path.find('\0') != std::string::npos) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("unix socket path must be 1 to {} bytes without NUL",
                              sizeof(un->sun_path) - 1));
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, address.path.data(), address.path.size());
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.path.size() + 1);
    return out;
  }
  std::string host = address.host == "localhost" ? "127.0.0.1" : address.host;
  if (auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
      ::inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(address.port);
    out.length = sizeof(sockaddr_in);
    return out;
  }
  if (auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
      ::inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(address.port);
    out.length = sizeof(sockaddr_in6);
    return out;
  }
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("tcp host '{}' is not an IP address or localhost", address.host));
}

// The host and port of an AF_INET/AF_INET6 socket address.
std::optional<std::pair<std::string, uint16_t>> inet_host_port(const sockaddr_storage& storage) {
  char text[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(storage);
    ::inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
    return std::pair<std::string, uint16_t>(text, ntohs(in.sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(storage);
    ::inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text));
    return std::pair<std::string, uint16_t>(text, ntohs(in6.sin6_port));
  }
  return std::nullopt;
}

// Failing to reach a peer is retryable (kUnavailable) whatever the errno,
// except a permission problem, which retrying will not fix.
tl::unexpected<Error> connect_error(const std::string& what, int err) {
  auto error = fail_errno(what, err);
  if (error.value().code() == ErrorCode::kPermissionDenied) return error;
  return fail(ErrorCode::kUnavailable, error.value().message());
}

Status set_blocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) return fail_errno("fcntl", errno);
  return {};
}

void set_nodelay(int fd) {
  // Control messages are small request/reply exchanges; Nagle would add a
  // delayed-ACK round trip to each of them. Failure only costs latency.
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Waits until fd is ready for events; kUnavailable "timed out" once the
// deadline has passed.
Status wait_ready(int fd, short events, Deadline deadline) {
  for (;;) {
    int timeout_ms = -1;
    if (deadline) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, INT_MAX));
    }
    pollfd entry{fd, events, 0};
    int rc = ::poll(&entry, 1, timeout_ms);
    if (rc > 0) return {};
    if (rc < 0 && errno != EINTR) return fail_errno("poll", errno);
    if (rc == 0 && deadline && Clock::now() >= *deadline) {
      return fail(ErrorCode::kUnavailable, "timed out");
    }
  }
}

// Reads up to length bytes, at least one unless the peer closed (0).
Result<size_t> read_some(int fd, char* out, size_t length, Deadline deadline) {
  for (;;) {
    ssize_t n = ::recv(fd, out, length, deadline ? MSG_DONTWAIT : 0);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return fail_errno("recv", errno);
    if (auto ready = wait_ready(fd, POLLIN, deadline); !ready) return fail(ready.error());
  }
}

Status read_exact_until(int fd, char* out, size_t length, bool started, Deadline deadline) {
  for (size_t done = 0; done < length;) {
    auto n = read_some(fd, out + done, length - done, deadline);
    if (!n) return fail(n.error());
    if (*n == 0) {
      return fail(ErrorCode::kUnavailable, started || done > 0 ? "connection closed mid-frame" : "connection closed");
    }
    done += *n;
  }
  return {};
}

Status send_all_until(int fd, std::string_view bytes, Deadline deadline) {
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL | (deadline ? MSG_DONTWAIT : 0));
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return fail_errno("send", errno);
    // A blocking socket says EAGAIN only when its SO_SNDTIMEO ran out.
    if (!deadline) return fail(ErrorCode::kUnavailable, "timed out");
    if (auto ready = wait_ready(fd, POLLOUT, deadline); !ready) return fail(ready.error());
  }
  return {};
}

// The header goes through a FrameDecoder first, so a bad magic or an
// oversized length is refused before any of the body is read, and the body
// is buffered only as its bytes arrive.
Result<Frame> read_frame_until(int fd, uint32_t max_body, Deadline deadline) {
  FrameDecoder decoder(max_body);
  std::array<char, kFrameHeaderSize> header;
  if (auto got = read_exact_until(fd, header.data(), header.size(), false, deadline); !got) {
    return fail(got.error());
  }
  if (auto fed = decoder.feed(std::as_bytes(std::span(header))); !fed) return fail(fed.error());
  uint32_t body_left = 0;
  for (int i = 0; i < 4; ++i) body_left |= uint32_t{static_cast<uint8_t>(header[4 + i])} << (8 * i);

  std::array<char, 16 * 1024> chunk;
  while (body_left > 0) {
    size_t want = std::min<size_t>(body_left, chunk.size());
    if (auto got = read_exact_until(fd, chunk.data(), want, true, deadline); !got) return fail(got.error());
    if (auto fed = decoder.feed(std::as_bytes(std::span(chunk.data(), want))); !fed) {
      return fail(fed.error());
    }
    body_left -= static_cast<uint32_t>(want);
  }
  return *decoder.next();
}

Status write_frame_until(int fd, const Frame& frame, Deadline deadline) {
  if (frame.body.size() > UINT32_MAX) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("frame body of {} bytes does not fit a frame", frame.body.size()));
  }
  return send_all_until(fd, encode_frame(frame), deadline);
}

}  // namespace

std::string SocketAddress::to_string() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  return "tcp:" + host_port(host, port);
}

Result<SocketAddress> parse_socket_address(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("bad socket address '{}': {}", text, why));
  };
  SocketAddress address;
  if (text.starts_with("unix:")) {
    address.kind = SocketAddress::Kind::kUnix;
    address.path = text.substr(5);
    if (address.path.empty()) return bad("empty unix socket path");
    if (auto sockaddr = to_sockaddr(address); !sockaddr) return bad(sockaddr.error().message());
    return address;
  }
  if (!text.starts_with("tcp:")) return bad("want unix:PATH or tcp:HOST:PORT");

  address.kind = SocketAddress::Kind::kTcp;
  std::string_view rest = text.substr(4);
  std::string_view port;
  if (rest.starts_with('[')) {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("unclosed '['");
    address.host = rest.substr(1, close - 1);
    if (!is_ipv6(address.host)) return bad("not an IPv6 address inside []");
    if (rest.substr(close + 1, 1) != ":") return bad("want ':PORT' after ']'");
    port = rest.substr(close + 2);
  } else {
    size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("missing ':PORT'");
    address.host = rest.substr(0, colon);
    if (address.host != "localhost" && !is_ipv4(address.host)) {
      return bad("host must be an IPv4 address, [IPv6 address] or localhost");
    }
    port = rest.substr(colon + 1);
  }
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), address.port);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size()) {
    return bad("port must be a number from 0 to 65535");
  }
  return address;
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

Fd::~Fd() { reset(); }

void Fd::reset() {
  // Not retried on EINTR: Linux frees the descriptor even then, and a retry
  // could close one another thread just opened.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<Fd> connect_socket(const SocketAddress& address, std::chrono::milliseconds timeout) {
  const std::string what = "connect " + address.to_string();
  auto target = to_sockaddr(address);
  if (!target) return fail(target.error().context(what));
  const auto deadline = Clock::now() + timeout;

  // Non-blocking only while connecting, so the timeout bounds an unanswered SYN.
  Fd fd(::socket(target->family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return fail_errno("socket", errno);
  int rc;
  while ((rc = ::connect(fd.get(), target->get(), target->length)) != 0) {
    // A unix socket whose accept backlog is full answers EAGAIN instead of
    // queueing the connect: retry until the deadline.
    if (errno == EAGAIN && target->family() == AF_UNIX && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    break;
  }
  // EINTR leaves the connect running in the background, like EINPROGRESS.
  if (rc != 0 && errno != EINPROGRESS && errno != EINTR) return connect_error(what, errno);
  if (rc != 0) {
    if (auto ready = wait_ready(fd.get(), POLLOUT, deadline); !ready) {
      return fail(ready.error().code(),
                  fmt::format("{}: {} after {} ms", what, ready.error().message(), timeout.count()));
    }
    int err = 0;
    socklen_t length = sizeof(err);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &length) != 0) err = errno;
    if (err != 0) return connect_error(what, err);
  }
  if (auto blocking = set_blocking(fd.get()); !blocking) return fail(blocking.error());
  if (target->family() != AF_UNIX) set_nodelay(fd.get());
  return fd;
}

Result<Fd> listen_socket(const SocketAddress& address) {
  const std::string what = "listen " + address.to_string();
  auto target = to_sockaddr(address);
  if (!target) return fail(target.error().context(what));

  Fd fd(::socket(target->family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket", errno);
  if (address.kind == SocketAddress::Kind::kUnix) {
    struct stat st;
    if (::lstat(address.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
      // Only a socket nobody accepts on is stale; a live server keeps its path.
      Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      if (!probe) return fail_errno("socket", errno);
      int rc = ::connect(probe.get(), target->get(), target->length);
      if (rc == 0 || errno == EAGAIN) {
        return fail(ErrorCode::kAlreadyExists, what + ": a server is listening there");
      }
      if (errno == ECONNREFUSED && ::unlink(address.path.c_str()) != 0 && errno != ENOENT) {
        return fail_errno(what + ": removing stale socket", errno);
      }
    }
  } else {
    // A restarted daemon must get its port back while old connections linger in TIME_WAIT.
    int one = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
      return fail_errno(what + ": SO_REUSEADDR", errno);
    }
  }
  if (::bind(fd.get(), target->get(), target->length) != 0) {
    if (errno == EADDRINUSE) {
      return fail(ErrorCode::kAlreadyExists, what + ": " + std::strerror(EADDRINUSE));
    }
    return fail_errno(what, errno);
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) return fail_errno(what, errno);
  return fd;
}

Result<SocketAddress> local_address(int listen_fd, const SocketAddress& requested) {
  if (requested.kind == SocketAddress::Kind::kUnix) return requested;
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return fail_errno("getsockname", errno);
  }
  auto inet = inet_host_port(storage);
  if (!inet) return fail(ErrorCode::kInvalidArgument, "not a tcp socket");
  SocketAddress address = requested;
  address.host = inet->first;
  address.port = inet->second;
  return address;
}

Status send_all(int fd, std::string_view bytes) { return send_all_until(fd, bytes, std::nullopt); }

Status read_exact(int fd, char* out, size_t length, bool started) {
  return read_exact_until(fd, out, length, started, std::nullopt);
}

Status write_frame(int fd, const Frame& frame) { return write_frame_until(fd, frame, std::nullopt); }

Result<Frame> read_frame(int fd, uint32_t max_body) {
  return read_frame_until(fd, max_body, std::nullopt);
}

// --- RpcClient ---

Result<std::unique_ptr<RpcClient>> RpcClient::connect(const SocketAddress& address,
                                                      std::chrono::milliseconds timeout) {
  auto fd = connect_socket(address, timeout);
  if (!fd) return fail(fd.error());
  return std::unique_ptr<RpcClient>(new RpcClient(std::move(*fd)));
}

RpcClient::~RpcClient() = default;

Result<std::string> RpcClient::call(uint16_t type, std::string body,
                                    std::chrono::milliseconds timeout) {
  std::lock_guard lock(mutex_);
  if (broken_) {
    return fail(ErrorCode::kUnavailable, "connection closed after an earlier call failed");
  }
  const auto deadline = Clock::now() + timeout;
  // A late or partial reply would desynchronize the stream for the next
  // caller, so any failure ends the connection. shutdown() rather than
  // close() keeps fd() from naming a recycled descriptor.
  auto broken = [&](const Error& error) {
    broken_ = true;
    ::shutdown(fd_.get(), SHUT_RDWR);
    std::string reason = Clock::now() >= deadline
                             ? fmt::format("no reply within {} ms", timeout.count())
                             : error.message();
    return fail(ErrorCode::kUnavailable,
                fmt::format("call type {}: {}; connection closed", type, reason));
  };

  const uint64_t id = next_id_++;
  if (auto sent = write_frame_until(fd_.get(), Frame{type, 0, id, std::move(body)}, deadline);
      !sent) {
    return broken(sent.error());
  }
  for (;;) {
    auto reply = read_frame_until(fd_.get(), kDefaultMaxFrameBody, deadline);
    if (!reply) return broken(reply.error());
    // Only the answer to this request counts; the server sends nothing else
    // today, and skipping keeps the client compatible if it ever does.
    if (reply->request_id != id || !(reply->flags & kFrameReply)) continue;
    if (reply->flags & kFrameError) return fail(unpack_error(reply->body));
    return std::move(reply->body);
  }
}

bool RpcClient::connected() const { return !broken_; }

// --- RpcServer ---

struct RpcServer::Impl {
  struct Client {
    Fd fd;  // closed by the client's thread when it ends, under mutex
    std::thread thread;
    bool done = false;
  };

  SocketAddress address;
  Handler handler;
  DisconnectHandler on_disconnect;
  uint32_t max_body = kDefaultMaxFrameBody;
  Fd listen_fd;
  // Identity of the unix socket file we created, so stop() never unlinks a
  // successor's socket.
  std::optional<std::pair<dev_t, ino_t>> socket_file;
  std::thread accept_thread;

  std::mutex mutex;
  bool stopping = false;        // guarded by mutex
  std::list<Client> clients;    // guarded by mutex; list: threads hold references
  uint64_t next_connection_id = 1;

  void accept_loop();
  void serve(Client& client, const PeerInfo& peer);
  Result<std::string> handle(const Frame& request, const PeerInfo& peer);
  void reap_finished_locked();
  void stop();
};

void RpcServer::Impl::accept_loop() {
  for (;;) {
    sockaddr_storage storage{};
    socklen_t length = sizeof(storage);
    Fd fd(::accept4(listen_fd.get(), reinterpret_cast<sockaddr*>(&storage), &length,
                    SOCK_CLOEXEC));
    int err = errno;
    std::unique_lock lock(mutex);
    if (stopping) return;
    if (!fd) {
      if (err == EINTR || err == ECONNABORTED) continue;
      // Out of descriptors or memory: back off rather than spin; clients
      // already connected keep being served.
      lock.unlock();
      spdlog::error("control: accept on {}: {}", address.to_string(), std::strerror(err));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    PeerInfo peer{next_connection_id++, "unix"};
    if (auto inet = inet_host_port(storage)) {
      peer.description = "tcp " + host_port(inet->first, inet->second);
      set_nodelay(fd.get());
    }
    reap_finished_locked();
    Client& client = clients.emplace_back();
    client.fd = std::move(fd);
    client.thread = std::thread([this, &client, peer = std::move(peer)] { serve(client, peer); });
  }
}

void RpcServer::Impl::reap_finished_locked() {
  for (auto it = clients.begin(); it != clients.end();) {
    if (!it->done) {
      ++it;
      continue;
    }
    it->thread.join();  // the thread set done as its last act: this returns at once
    it = clients.erase(it);
  }
}

Result<std::string> RpcServer::Impl::handle(const Frame& request, const PeerInfo& peer) {
  // A handler bug fails its request instead of terminating the daemon.
  try {
    auto result = handler(request, peer);
    // Clients read replies with the default limit; an error reply they can
    // read beats a reply that breaks their connection.
    if (result && result->size() > kDefaultMaxFrameBody) {
      return fail(ErrorCode::kInternal,
                  fmt::format("reply to type {} of {} bytes exceeds limit {}", request.type,
                              result->size(), kDefaultMaxFrameBody));
    }
    return result;
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                fmt::format("handler for type {} threw: {}", request.type, e.what()));
  }
}

void RpcServer::Impl::serve(Client& client, const PeerInfo& peer) {
  const int fd = client.fd.get();
  for (;;) {
    auto request = read_frame(fd, max_body);
    if (request && (request->flags & kFrameReply)) {
      request = fail(ErrorCode::kInvalidArgument,
                     fmt::format("unexpected reply frame (type {}) from a client", request->type));
    }
    if (!request) {
      if (request.error().code() == ErrorCode::kInvalidArgument) {
        spdlog::warn("control: closing {}: {}", peer.description, request.error().to_string());
      }
      break;
    }
    Frame reply{request->type, kFrameReply, request->request_id, {}};
    if (auto result = handle(*request, peer)) {
      reply.body = std::move(*result);
    } else {
      reply.flags |= kFrameError;
      reply.body = pack_error(result.error());
    }
    if (!write_frame(fd, reply)) break;
  }
  if (on_disconnect) on_disconnect(peer);
  std::lock_guard lock(mutex);
  client.fd.reset();
  client.done = true;
}

void RpcServer::Impl::stop() {
  {
    std::lock_guard lock(mutex);
    if (stopping) return;
    stopping = true;
  }
  // shutdown() wakes a thread blocked in accept()/recv(); close() would not.
  ::shutdown(listen_fd.get(), SHUT_RDWR);
  accept_thread.join();
  if (socket_file) {
    struct stat st;
    if (::lstat(address.path.c_str(), &st) == 0 &&
        std::pair(st.st_dev, st.st_ino) == *socket_file) {
      ::unlink(address.path.c_str());
    }
  }
  listen_fd.reset();
  {
    std::lock_guard lock(mutex);
    for (auto& client : clients) {
      if (client.fd) ::shutdown(client.fd.get(), SHUT_RDWR);
    }
  }
  // The accept thread is gone, so the list no longer changes shape; client
  // threads still take the mutex to finish, so join without holding it.
  for (auto& client : clients) client.thread.join();
  clients.clear();
}

RpcServer::RpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RpcServer::~RpcServer() {
  if (impl_) impl_->stop();
}

void RpcServer::stop() { impl_->stop(); }

Result<std::unique_ptr<RpcServer>> RpcServer::start(const SocketAddress& address, Handler handler,
                                                    DisconnectHandler on_disconnect,
                                                    uint32_t max_body) {
  auto fd = listen_socket(address);
  if (!fd) return fail(fd.error());
  auto real = local_address(fd->get(), address);
  if (!real) return fail(real.error());

  auto impl = std::make_unique<Impl>();
  impl->address = *real;
  impl->handler = std::move(handler);
  impl->on_disconnect = std::move(on_disconnect);
  impl->max_body = max_body;
  impl->listen_fd = std::move(*fd);
  if (address.kind == SocketAddress::Kind::kUnix) {
    struct stat st;
    if (::lstat(address.path.c_str(), &st) == 0) impl->socket_file = std::pair(st.st_dev, st.st_ino);
  }
  impl->accept_thread = std::thread([raw = impl.get()] { raw->accept_loop(); });
  auto server = std::unique_ptr<RpcServer>(new RpcServer(std::move(impl)));
  server->address_ = *real;
  return server;
}

}  // namespace vmpod::net
