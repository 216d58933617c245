#include <vmpod/qmp/qmp_server.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "qmp_line.h"

namespace vmpod::qmp {

// Not in an anonymous namespace: Completion::State, which has external
// linkage, holds one.
struct CompletionMessage {
  uint64_t client;
  uint64_t command;
  Reply reply;
};
struct EventMessage {
  std::optional<uint64_t> client;  // none: every client
  std::string line;
};
using ServerMessage = std::variant<CompletionMessage, EventMessage>;

// Carries completions and events from any thread to the event loop. Every
// Completion shares it, so it outlives the server; once closed it drops
// what it is given.
class ServerMailbox {
 public:
  explicit ServerMailbox(net::Fd wake_fd) : wake_fd_(std::move(wake_fd)) {}

  int fd() const { return wake_fd_.get(); }

  void post(ServerMessage message) {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    messages_.push_back(std::move(message));
    if (!signalled_) {
      signalled_ = true;
      wake();
    }
  }

  std::deque<ServerMessage> take() {
    std::lock_guard lock(mutex_);
    uint64_t count;
    // Non-blocking: nothing to read when only stop() woke the loop.
    (void)!::read(wake_fd_.get(), &count, sizeof(count));
    signalled_ = false;
    return std::exchange(messages_, {});
  }

  void wake() {
    uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof(one));
  }

  void close() {
    std::deque<ServerMessage> dropped;
    std::lock_guard lock(mutex_);
    closed_ = true;
    dropped.swap(messages_);
  }

 private:
  std::mutex mutex_;
  std::deque<ServerMessage> messages_;
  bool signalled_ = false;
  bool closed_ = false;
  net::Fd wake_fd_;
};

struct Completion::State {
  State(std::shared_ptr<ServerMailbox> box, uint64_t client_id, uint64_t command_id,
        std::string command_name)
      : mailbox(std::move(box)), client(client_id), command(command_id), name(std::move(command_name)) {}

  // A dispatcher that loses a completion must not leave its client waiting
  // for ever: in-band commands behind it would never run.
  ~State() {
    if (done) return;
    mailbox->post(CompletionMessage{
        client, command,
        qmp_fail(ErrorClass::kGenericError, fmt::format("Command '{}' ended without a reply", name))});
  }

  std::shared_ptr<ServerMailbox> mailbox;
  const uint64_t client;
  const uint64_t command;
  const std::string name;
  std::atomic<bool> done{false};
};

void Completion::operator()(Reply reply) const {
  if (!state_ || state_->done.exchange(true)) return;
  state_->mailbox->post(CompletionMessage{state_->client, state_->command, std::move(reply)});
}

namespace {

constexpr uint64_t kListenTag = UINT64_MAX;
constexpr uint64_t kWakeTag = UINT64_MAX - 1;
// Watched descriptors: this bit and the fd. Client ids never get near it.
constexpr uint64_t kWatchTag = uint64_t{1} << 62;
constexpr size_t kReadChunk = 64 * 1024;

std::string event_line(std::string_view name, const nlohmann::json* data) {
  const int64_t micros = std::chrono::duration_cast<std::chrono::microseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  nlohmann::json message = {
      {"event", name},
      {"timestamp", {{"seconds", micros / 1000000}, {"microseconds", micros % 1000000}}}};
  if (data) message["data"] = *data;
  return qmp_line(message);
}

struct Client {
  net::Fd fd;
  QmpSession session;
  std::string output;
  size_t output_sent = 0;
  uint32_t interest = 0;  // the epoll events it is registered for

  size_t pending() const { return output.size() - output_sent; }
};

}  // namespace

struct QmpServer::Impl {
  Impl(Dispatcher& d, const ServerOptions& o, const Greeting& g) : dispatcher(d), options(o), greeting(g) {}

  void run();
  void accept_clients();
  void on_client(uint64_t id, uint32_t events);
  // After a client's session changed: hands out its dispatches, writes its
  // output, and sets what to wait for.
  void pump(uint64_t id);
  // Why the client must go, if it must.
  std::optional<std::string> flush(Client& client);
  void drop(uint64_t id, std::string_view why, bool warn);
  void deliver(std::deque<ServerMessage> messages);
  void shutdown();

  Dispatcher& dispatcher;
  const ServerOptions options;
  net::SocketAddress address;
  net::Fd listen_fd;
  net::Fd epoll_fd;
  std::shared_ptr<ServerMailbox> mailbox;

  std::mutex greeting_mutex;
  Greeting greeting;

  std::mutex watch_mutex;
  std::unordered_map<int, std::shared_ptr<std::function<void(uint32_t)>>> watches;

  std::atomic<bool> stopping{false};
  std::atomic<size_t> client_count{0};
  std::mutex stop_mutex;
  bool stopped = false;
  std::thread thread;

  // Owned by the event loop thread.
  std::unordered_map<uint64_t, Client> clients;
  uint64_t next_client_id = 1;
  bool accepting = true;  // false while out of file descriptors
  std::vector<char> read_buffer = std::vector<char>(kReadChunk);
};

void QmpServer::Impl::run() {
  std::array<epoll_event, 64> events;
  while (!stopping) {
    int count = ::epoll_wait(epoll_fd.get(), events.data(), static_cast<int>(events.size()), -1);
    if (count < 0) {
      if (errno == EINTR) continue;
      spdlog::error("qmp {}: epoll_wait: {}; no longer serving", address.to_string(),
                    std::strerror(errno));
      break;
    }
    for (int i = 0; i < count && !stopping; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kListenTag) {
        accept_clients();
      } else if (tag & kWatchTag) {
        std::shared_ptr<std::function<void(uint32_t)>> on_ready;
        {
          std::lock_guard lock(watch_mutex);
          auto found = watches.find(static_cast<int>(tag & ~kWatchTag));
          if (found != watches.end()) on_ready = found->second;
        }
        if (on_ready) (*on_ready)(events[i].events);
      } else if (tag != kWakeTag) {
        on_client(tag, events[i].events);
      }
    }
    deliver(mailbox->take());
  }
  std::vector<uint64_t> ids;
  for (const auto& entry : clients) ids.push_back(entry.first);
  for (uint64_t id : ids) drop(id, "server stopping", false);
}

void QmpServer::Impl::accept_clients() {
  for (;;) {
    int fd = ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The pending connection would wake a level-triggered epoll for ever.
        spdlog::warn("qmp {}: accept: {}; not accepting until a client leaves", address.to_string(),
                     std::strerror(errno));
        ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_DEL, listen_fd.get(), nullptr);
        accepting = false;
        return;
      }
      spdlog::error("qmp {}: accept: {}", address.to_string(), std::strerror(errno));
      return;
    }
    net::Fd client_fd(fd);
    if (clients.size() >= options.max_clients) {
      spdlog::warn("qmp {}: refused a client: {} connected, the limit", address.to_string(),
                   clients.size());
      continue;
    }
    if (address.kind == net::SocketAddress::Kind::kTcp) {
      // Replies are small and each one is awaited: Nagle would delay them.
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    const uint64_t id = next_client_id++;
    Greeting current;
    {
      std::lock_guard lock(greeting_mutex);
      current = greeting;
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = id;
    if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      spdlog::error("qmp {}: epoll_ctl: {}", address.to_string(), std::strerror(errno));
      continue;
    }
    clients.emplace(id, Client{std::move(client_fd), QmpSession(id, current, options.max_value_bytes),
                               {}, 0, EPOLLIN});
    client_count = clients.size();
    spdlog::debug("qmp {}: client {} connected", address.to_string(), id);
    pump(id);
  }
}

void QmpServer::Impl::on_client(uint64_t id, uint32_t events) {
  auto found = clients.find(id);
  if (found == clients.end()) return;
  Client& client = found->second;
  if (events & EPOLLERR) {
    int error = 0;
    socklen_t length = sizeof(error);
    ::getsockopt(client.fd.get(), SOL_SOCKET, SO_ERROR, &error, &length);
    return drop(id, fmt::format("socket error: {}", std::strerror(error)), false);
  }
  if (events & EPOLLOUT) {
    if (auto why = flush(client)) return drop(id, *why, true);
  }
  if (events & (EPOLLIN | EPOLLHUP)) {
    // A client whose queue is full is not read; if it has hung up
    // meanwhile, its queued commands have nobody to answer.
    if (!(client.interest & EPOLLIN)) return drop(id, "hung up", false);
    ssize_t got = ::recv(client.fd.get(), read_buffer.data(), read_buffer.size(), MSG_DONTWAIT);
    if (got == 0) return drop(id, "closed the connection", false);
    if (got < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return drop(id, fmt::format("recv: {}", std::strerror(errno)), false);
      }
    } else {
      client.session.receive(std::string_view(read_buffer.data(), static_cast<size_t>(got)));
    }
  }
  pump(id);
}

void QmpServer::Impl::pump(uint64_t id) {
  auto found = clients.find(id);
  if (found == clients.end()) return;
  Client& client = found->second;
  for (auto& dispatch : client.session.take_dispatches()) {
    auto state = std::make_shared<Completion::State>(mailbox, id, dispatch.command,
                                                     dispatch.request.command);
    dispatcher.dispatch(dispatch.request, Completion(std::move(state)));
  }
  client.output += client.session.take_output();
  if (auto why = flush(client)) return drop(id, *why, true);

  // QEMU stops reading a monitor whose request queue is full.
  uint32_t interest = 0;
  if (client.session.queued_commands() < options.max_queued_commands) interest |= EPOLLIN;
  if (client.pending() > 0) interest |= EPOLLOUT;
  if (interest == client.interest) return;
  epoll_event event{};
  event.events = interest;
  event.data.u64 = id;
  if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_MOD, client.fd.get(), &event) != 0) {
    return drop(id, fmt::format("epoll_ctl: {}", std::strerror(errno)), true);
  }
  client.interest = interest;
}

std::optional<std::string> QmpServer::Impl::flush(Client& client) {
  while (client.pending() > 0) {
    // MSG_NOSIGNAL: a vanished client is EPIPE, not a SIGPIPE for the process.
    ssize_t sent = ::send(client.fd.get(), client.output.data() + client.output_sent, client.pending(),
                          MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent >= 0) {
      client.output_sent += static_cast<size_t>(sent);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else if (errno != EINTR) {
      return fmt::format("send: {}", std::strerror(errno));
    }
  }
  if (client.pending() == 0) {
    client.output.clear();
    client.output_sent = 0;
  } else if (client.output_sent > client.output.size() / 2) {
    client.output.erase(0, client.output_sent);
    client.output_sent = 0;
  }
  if (client.pending() > options.max_output_bytes) {
    return fmt::format("{} bytes of output unread, over the {} byte limit", client.pending(),
                       options.max_output_bytes);
  }
  return std::nullopt;
}

void QmpServer::Impl::drop(uint64_t id, std::string_view why, bool warn) {
  auto found = clients.find(id);
  if (found == clients.end()) return;
  if (warn) {
    spdlog::warn("qmp {}: dropped client {}: {}", address.to_string(), id, why);
  } else {
    spdlog::debug("qmp {}: client {} gone: {}", address.to_string(), id, why);
  }
  clients.erase(found);  // closing the socket also takes it out of epoll
  client_count = clients.size();
  if (!accepting && !stopping) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kListenTag;
    accepting = ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, listen_fd.get(), &event) == 0;
  }
  dispatcher.disconnected(id);
}

void QmpServer::Impl::deliver(std::deque<ServerMessage> messages) {
  for (ServerMessage& message : messages) {
    if (auto* completion = std::get_if<CompletionMessage>(&message)) {
      auto found = clients.find(completion->client);
      if (found == clients.end()) continue;  // the client left first
      found->second.session.complete(completion->command, std::move(completion->reply));
      pump(completion->client);
      continue;
    }
    auto& event = std::get<EventMessage>(message);
    std::vector<uint64_t> ids;
    if (event.client) {
      ids.push_back(*event.client);
    } else {
      for (const auto& entry : clients) ids.push_back(entry.first);
    }
    for (uint64_t id : ids) {
      auto found = clients.find(id);
      if (found == clients.end()) continue;
      found->second.session.add_event(event.line);
      pump(id);
    }
  }
}

void QmpServer::Impl::shutdown() {
  std::lock_guard lock(stop_mutex);
  if (stopped) return;
  stopped = true;
  if (thread.joinable()) {
    stopping = true;
    mailbox->wake();
    thread.join();
  }
  if (mailbox) mailbox->close();
  if (listen_fd && address.kind == net::SocketAddress::Kind::kUnix) ::unlink(address.path.c_str());
  listen_fd.reset();
  epoll_fd.reset();
}

Result<std::unique_ptr<QmpServer>> QmpServer::start(const net::SocketAddress& address,
                                                    const Greeting& greeting, Dispatcher& dispatcher,
                                                    const ServerOptions& options) {
  const std::string what = "qmp server on " + address.to_string();
  auto impl = std::make_unique<Impl>(dispatcher, options, greeting);
  auto listening = net::listen_socket(address);
  if (!listening) return fail(listening.error().context(what));
  impl->listen_fd = std::move(*listening);
  impl->address = address;
  // From here on, a failure removes the unix socket file again.
  std::unique_ptr<QmpServer> server(new QmpServer(std::move(impl)));
  Impl& self = *server->impl_;

  auto actual = net::local_address(self.listen_fd.get(), address);
  if (!actual) return fail(actual.error().context(what));
  self.address = *actual;
  int flags = ::fcntl(self.listen_fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(self.listen_fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return fail_errno(what + ": fcntl", errno);
  }
  self.epoll_fd = net::Fd(::epoll_create1(EPOLL_CLOEXEC));
  if (!self.epoll_fd) return fail_errno(what + ": epoll_create1", errno);
  net::Fd wake_fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake_fd) return fail_errno(what + ": eventfd", errno);
  self.mailbox = std::make_shared<ServerMailbox>(std::move(wake_fd));
  for (auto [fd, tag] : {std::pair{self.listen_fd.get(), kListenTag}, std::pair{self.mailbox->fd(), kWakeTag}}) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = tag;
    if (::epoll_ctl(self.epoll_fd.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
      return fail_errno(what + ": epoll_ctl", errno);
    }
  }
  self.thread = std::thread([&self] { self.run(); });
  return server;
}

QmpServer::QmpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

QmpServer::~QmpServer() { stop(); }

const net::SocketAddress& QmpServer::address() const { return impl_->address; }

void QmpServer::set_greeting(const Greeting& greeting) {
  std::lock_guard lock(impl_->greeting_mutex);
  impl_->greeting = greeting;
}

void QmpServer::emit_event(std::string_view name) {
  impl_->mailbox->post(EventMessage{std::nullopt, event_line(name, nullptr)});
}

void QmpServer::emit_event(std::string_view name, nlohmann::json data) {
  impl_->mailbox->post(EventMessage{std::nullopt, event_line(name, &data)});
}

void QmpServer::send_event_to(uint64_t client_id, std::string_view name) {
  impl_->mailbox->post(EventMessage{client_id, event_line(name, nullptr)});
}

void QmpServer::send_event_to(uint64_t client_id, std::string_view name, nlohmann::json data) {
  impl_->mailbox->post(EventMessage{client_id, event_line(name, &data)});
}

size_t QmpServer::client_count() const { return impl_->client_count; }

void QmpServer::stop() { impl_->shutdown(); }

Status QmpServer::watch(int fd, uint32_t events, std::function<void(uint32_t)> on_ready) {
  {
    std::lock_guard lock(impl_->watch_mutex);
    impl_->watches[fd] = std::make_shared<std::function<void(uint32_t)>>(std::move(on_ready));
  }
  epoll_event event{};
  event.events = events;
  event.data.u64 = kWatchTag | static_cast<uint32_t>(fd);
  if (::epoll_ctl(impl_->epoll_fd.get(), EPOLL_CTL_ADD, fd, &event) != 0) {
    int error = errno;
    std::lock_guard lock(impl_->watch_mutex);
    impl_->watches.erase(fd);
    return fail_errno("qmp server: watch", error);
  }
  return {};
}

void QmpServer::set_watch_events(int fd, uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.u64 = kWatchTag | static_cast<uint32_t>(fd);
  ::epoll_ctl(impl_->epoll_fd.get(), EPOLL_CTL_MOD, fd, &event);
}

void QmpServer::unwatch(int fd) {
  ::epoll_ctl(impl_->epoll_fd.get(), EPOLL_CTL_DEL, fd, nullptr);
  std::lock_guard lock(impl_->watch_mutex);
  impl_->watches.erase(fd);
}

}  // namespace vmpod::qmp
