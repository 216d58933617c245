// net::StreamServer: a thread per client, a bound with a refusal, and a
// stop that ends blocked clients and removes the socket file.
#include <vmpod/net/stream_server.h>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include <criterion/criterion.h>

using namespace vmpod;
using namespace vmpod::net;
using namespace std::chrono_literals;

namespace {

struct TempDir {
  TempDir() {
    char pattern[] = "/tmp/vmpod-stream-test-XXXXXX";
    cr_assert(::mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

SocketAddress unix_address(const std::string& path) { return SocketAddress{SocketAddress::Kind::kUnix, path, {}, 0}; }

// Echoes what it reads until the client goes or the server stops.
void echo(int fd) {
  char buffer[256];
  for (;;) {
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) return;
    if (::send(fd, buffer, static_cast<size_t>(n), MSG_NOSIGNAL) != n) return;
  }
}

Fd connect_to(const SocketAddress& address) {
  auto fd = connect_socket(address, 2s);
  cr_assert(fd.has_value(), "%s", fd ? "" : fd.error().to_string().c_str());
  return std::move(*fd);
}

std::string round_trip(int fd, const std::string& text) {
  cr_assert_eq(::send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
  std::string got(text.size(), '\0');
  size_t done = 0;
  while (done < got.size()) {
    ssize_t n = ::recv(fd, got.data() + done, got.size() - done, 0);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  got.resize(done);
  return got;
}

template <class Ready>
bool eventually(Ready ready) {
  for (int i = 0; i < 200 && !ready(); ++i) std::this_thread::sleep_for(10ms);
  return ready();
}

}  // namespace

Test(stream_server, serves_clients_at_once_each_on_its_own_thread) {
  TempDir dir;
  auto server = StreamServer::start(unix_address(dir.path + "/s.sock"), echo);
  cr_assert(server.has_value(), "%s", server ? "" : server.error().to_string().c_str());
  Fd first = connect_to((*server)->address());
  Fd second = connect_to((*server)->address());
  // The second is answered while the first is still connected and idle.
  std::string two = round_trip(second.get(), "two");
  std::string one = round_trip(first.get(), "one");
  cr_assert_str_eq(two.c_str(), "two");
  cr_assert_str_eq(one.c_str(), "one");
  cr_assert(eventually([&] { return (*server)->client_count() == 2; }));
  second.reset();
  cr_assert(eventually([&] { return (*server)->client_count() == 1; }), "a client that left still counts");
}

Test(stream_server, refuses_clients_over_the_bound) {
  TempDir dir;
  std::atomic<size_t> refused_at{0};
  auto server = StreamServer::start(
      unix_address(dir.path + "/s.sock"), echo, 1, [&](int fd, size_t clients) {
        refused_at = clients;
        (void)::send(fd, "busy", 4, MSG_NOSIGNAL);
      });
  cr_assert(server.has_value());
  Fd first = connect_to((*server)->address());
  cr_assert(eventually([&] { return (*server)->client_count() == 1; }));
  Fd second = connect_to((*server)->address());
  std::string answer = round_trip(second.get(), "xxxx");
  cr_assert_str_eq(answer.c_str(), "busy");
  cr_assert_eq(refused_at.load(), 1u);
  char byte;
  // Closed: end of file, or a reset for the bytes it sent and nobody read.
  cr_assert_leq(::recv(second.get(), &byte, 1, 0), 0, "a refused client stays connected");
  std::string still = round_trip(first.get(), "ok");
  cr_assert_str_eq(still.c_str(), "ok");
}

Test(stream_server, stop_ends_blocked_clients_and_removes_the_socket) {
  TempDir dir;
  const std::string path = dir.path + "/s.sock";
  auto server = StreamServer::start(unix_address(path), echo);
  cr_assert(server.has_value());
  Fd client = connect_to((*server)->address());
  cr_assert(eventually([&] { return (*server)->client_count() == 1; }));
  // echo() is blocked in recv: stop() must end it rather than wait forever.
  (*server)->stop();
  cr_assert_not(std::filesystem::exists(path));
  char byte;
  cr_assert_eq(::recv(client.get(), &byte, 1, 0), 0);
  (*server)->stop();  // twice is fine
}
