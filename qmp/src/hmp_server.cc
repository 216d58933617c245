#include <vmpod/qmp/hmp_server.h>

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

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace vmpod::qmp {

namespace {

constexpr std::string_view kPrompt = "(qemu) ";

// QEMU's monitor_puts(): a "\n" goes out as "\r\n". Text that came from
// QEMU's own HMP (human-monitor-command) has its "\r\n" already.
std::string monitor_text(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 16);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) out += '\r';
    out += text[i];
  }
  return out;
}

}  // namespace

struct HmpServer::Impl {
  struct Client {
    net::Fd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  net::SocketAddress address;
  std::string banner;
  Handler handler;
  HmpOptions options;
  net::Fd listen_fd;
  net::Fd stop_fd;  // an eventfd every poll also waits on
  std::thread acceptor;

  mutable std::mutex mutex;
  std::list<Client> clients;
  bool stopped = false;

  void accept_loop();
  void serve(Client& client);
  bool send_all(int fd, std::string_view text) const;
  // 1: readable, 0: stopping, -1: error.
  int wait_readable(int fd) const;
  void reap_finished();
};

int HmpServer::Impl::wait_readable(int fd) const {
  pollfd fds[2] = {{fd, POLLIN, 0}, {stop_fd.get(), POLLIN, 0}};
  for (;;) {
    int ready = ::poll(fds, 2, -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return -1;
    if (fds[1].revents) return 0;
    return 1;
  }
}

bool HmpServer::Impl::send_all(int fd, std::string_view text) const {
  while (!text.empty()) {
    ssize_t sent = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return false;  // gone, or SO_SNDTIMEO ran out
    text.remove_prefix(static_cast<size_t>(sent));
  }
  return true;
}

void HmpServer::Impl::serve(Client& client) {
  const int fd = client.fd.get();
  timeval timeout{};
  timeout.tv_sec = options.send_timeout.count() / 1000;
  timeout.tv_usec = (options.send_timeout.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  if (!send_all(fd, monitor_text(banner + "\n") + std::string(kPrompt))) return;
  std::string line;
  bool overlong = false;  // skipping the rest of a refused line
  char buffer[4096];
  while (wait_readable(fd) == 1) {
    ssize_t got = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (got <= 0) return;
    for (ssize_t i = 0; i < got; ++i) {
      const char c = buffer[i];
      if (c != '\n') {
        if (line.size() < options.max_line_bytes) {
          line += c;
        } else {
          overlong = true;
        }
        continue;
      }
      std::string output;
      if (overlong) {
        output = fmt::format("line too long: over {} bytes\n", options.max_line_bytes);
      } else {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") != std::string::npos) output = handler(line);
      }
      line.clear();
      overlong = false;
      if (!send_all(fd, monitor_text(output) + std::string(kPrompt))) return;
    }
  }
}

void HmpServer::Impl::reap_finished() {
  std::lock_guard lock(mutex);
  for (auto it = clients.begin(); it != clients.end();) {
    if (it->done) {
      it->thread.join();
      it = clients.erase(it);
    } else {
      ++it;
    }
  }
}

void HmpServer::Impl::accept_loop() {
  while (wait_readable(listen_fd.get()) == 1) {
    int fd = ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      spdlog::warn("hmp {}: accept: {}", address.to_string(), std::strerror(errno));
      // Out of descriptors: let a client leave before trying again.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    net::Fd client_fd(fd);
    reap_finished();
    std::lock_guard lock(mutex);
    if (stopped) return;
    if (clients.size() >= options.max_clients) {
      (void)send_all(fd, monitor_text(fmt::format("too many monitor clients ({})\n", clients.size())));
      continue;
    }
    Client& client = clients.emplace_back();
    client.fd = std::move(client_fd);
    client.thread = std::thread([this, &client] {
      serve(client);
      ::shutdown(client.fd.get(), SHUT_RDWR);
      client.done = true;
    });
  }
}

Result<std::unique_ptr<HmpServer>> HmpServer::start(const net::SocketAddress& address, std::string banner,
                                                    Handler handler, const HmpOptions& options) {
  const std::string what = "hmp server on " + address.to_string();
  auto impl = std::make_unique<Impl>();
  impl->banner = std::move(banner);
  impl->handler = std::move(handler);
  impl->options = options;
  auto listening = net::listen_socket(address);
  if (!listening) return fail(listening.error().context(what));
  impl->listen_fd = std::move(*listening);
  impl->address = address;
  std::unique_ptr<HmpServer> server(new HmpServer(std::move(impl)));
  Impl& self = *server->impl_;
  auto actual = net::local_address(self.listen_fd.get(), address);
  if (!actual) return fail(actual.error().context(what));
  self.address = *actual;
  self.stop_fd = net::Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!self.stop_fd) return fail_errno(what + ": eventfd", errno);
  self.acceptor = std::thread([&self] { self.accept_loop(); });
  return server;
}

HmpServer::HmpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HmpServer::~HmpServer() { stop(); }

const net::SocketAddress& HmpServer::address() const { return impl_->address; }

size_t HmpServer::client_count() const {
  std::lock_guard lock(impl_->mutex);
  size_t count = 0;
  for (const auto& client : impl_->clients) count += client.done ? 0 : 1;
  return count;
}

void HmpServer::stop() {
  Impl& self = *impl_;
  {
    std::lock_guard lock(self.mutex);
    if (self.stopped) return;
    self.stopped = true;
  }
  if (self.stop_fd) {
    uint64_t one = 1;
    (void)!::write(self.stop_fd.get(), &one, sizeof(one));
  }
  if (self.acceptor.joinable()) self.acceptor.join();
  // No lock: the acceptor is gone, so nothing adds clients any more.
  for (auto& client : self.clients) {
    if (client.thread.joinable()) client.thread.join();
  }
  self.clients.clear();
  if (self.listen_fd && self.address.kind == net::SocketAddress::Kind::kUnix) ::unlink(self.address.path.c_str());
  self.listen_fd.reset();
}

}  // namespace vmpod::qmp
