#include <vmpod/qmp/hmp_server.h>

#include <sys/socket.h>

#include <cerrno>

#include <fmt/format.h>

#include <vmpod/net/stream_server.h>

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
  std::string banner;
  Handler handler;
  HmpOptions options;
  std::unique_ptr<net::StreamServer> server;

  void serve(int fd) const;
};

void HmpServer::Impl::serve(int fd) const {
  timeval timeout{};
  timeout.tv_sec = options.send_timeout.count() / 1000;
  timeout.tv_usec = (options.send_timeout.count() % 1000) * 1000;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  if (!net::send_all(fd, monitor_text(banner + "\n") + std::string(kPrompt))) return;
  std::string line;
  bool overlong = false;  // skipping the rest of a refused line
  char buffer[4096];
  for (;;) {
    ssize_t got = ::recv(fd, buffer, sizeof(buffer), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;  // gone, or stop() shut the socket down
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
      if (!net::send_all(fd, monitor_text(output) + std::string(kPrompt))) return;
    }
  }
}

Result<std::unique_ptr<HmpServer>> HmpServer::start(const net::SocketAddress& address, std::string banner,
                                                    Handler handler, const HmpOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->banner = std::move(banner);
  impl->handler = std::move(handler);
  impl->options = options;
  Impl& self = *impl;
  auto server = net::StreamServer::start(
      address, [&self](int fd) { self.serve(fd); }, options.max_clients,
      [](int fd, size_t clients) {
        (void)net::send_all(fd, monitor_text(fmt::format("too many monitor clients ({})\n", clients)));
      });
  if (!server) return fail(server.error().context("hmp server on " + address.to_string()));
  impl->server = std::move(*server);
  return std::unique_ptr<HmpServer>(new HmpServer(std::move(impl)));
}

HmpServer::HmpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HmpServer::~HmpServer() { stop(); }

const net::SocketAddress& HmpServer::address() const { return impl_->server->address(); }

size_t HmpServer::client_count() const { return impl_->server->client_count(); }

void HmpServer::stop() { impl_->server->stop(); }

}  // namespace vmpod::qmp
