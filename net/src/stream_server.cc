#include <vmpod/net/stream_server.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

namespace vmpod::net {

struct StreamServer::Impl {
  struct Client {
    Fd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  SocketAddress address;
  Serve serve;
  size_t max_clients = 0;
  Refuse refuse;
  Fd listen_fd;
  Fd stop_fd;  // an eventfd the acceptor polls besides the listening socket
  std::thread acceptor;

  mutable std::mutex mutex;
  std::list<Client> clients;  // a list: client threads hold references
  bool stopped = false;

  void accept_loop();
  void reap_finished_locked();
};

void StreamServer::Impl::reap_finished_locked() {
  for (auto it = clients.begin(); it != clients.end();) {
    if (!it->done) {
      ++it;
      continue;
    }
    it->thread.join();  // done is the thread's last act: this returns at once
    it = clients.erase(it);
  }
}

void StreamServer::Impl::accept_loop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd.get(), POLLIN, 0}, {stop_fd.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("{}: poll: {}", address.to_string(), std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    Fd fd(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      // Out of descriptors: let a client leave before trying again.
      spdlog::warn("{}: accept: {}", address.to_string(), std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    std::lock_guard lock(mutex);
    if (stopped) return;
    reap_finished_locked();
    if (clients.size() >= max_clients) {
      spdlog::warn("{}: {} clients already: closing a new one", address.to_string(), clients.size());
      if (refuse) refuse(fd.get(), clients.size());
      continue;
    }
    Client& client = clients.emplace_back();
    client.fd = std::move(fd);
    client.thread = std::thread([this, &client] {
      serve(client.fd.get());
      ::shutdown(client.fd.get(), SHUT_RDWR);
      client.done = true;
    });
  }
}

Result<std::unique_ptr<StreamServer>> StreamServer::start(const SocketAddress& address, Serve serve,
                                                          size_t max_clients, Refuse refuse) {
  auto impl = std::make_unique<Impl>();
  impl->serve = std::move(serve);
  impl->max_clients = max_clients;
  impl->refuse = std::move(refuse);
  auto listening = listen_socket(address);
  if (!listening) return fail(listening.error());
  impl->listen_fd = std::move(*listening);
  auto actual = local_address(impl->listen_fd.get(), address);
  if (!actual) return fail(actual.error());
  impl->address = *actual;
  impl->stop_fd = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->stop_fd) return fail_errno(address.to_string() + ": eventfd", errno);
  std::unique_ptr<StreamServer> server(new StreamServer(std::move(impl)));
  Impl& self = *server->impl_;
  self.acceptor = std::thread([&self] { self.accept_loop(); });
  return server;
}

StreamServer::StreamServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StreamServer::~StreamServer() { stop(); }

const SocketAddress& StreamServer::address() const { return impl_->address; }

size_t StreamServer::client_count() const {
  std::lock_guard lock(impl_->mutex);
  size_t count = 0;
  for (const auto& client : impl_->clients) count += client.done ? 0 : 1;
  return count;
}

void StreamServer::stop() {
  Impl& self = *impl_;
  {
    std::lock_guard lock(self.mutex);
    if (self.stopped) return;
    self.stopped = true;
    for (auto& client : self.clients) ::shutdown(client.fd.get(), SHUT_RDWR);
  }
  uint64_t one = 1;
  (void)!::write(self.stop_fd.get(), &one, sizeof(one));
  if (self.acceptor.joinable()) self.acceptor.join();
  // The acceptor is gone: nothing adds clients any more.
  for (auto& client : self.clients) {
    if (client.thread.joinable()) client.thread.join();
  }
  self.clients.clear();
  if (self.address.kind == SocketAddress::Kind::kUnix) ::unlink(self.address.path.c_str());
  self.listen_fd.reset();
}

}  // namespace vmpod::net
