// The HMP text socket: banner and prompt, one handler call per line with
// QEMU's "\r\n" line ends, over-long lines refused, clients served at once,
// a client that stops reading dropped, and stop() with clients connected.
#include <criterion/criterion.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include <vmpod/qmp/hmp_server.h>

using namespace vmpod;
using namespace vmpod::qmp;
using namespace std::chrono_literals;

namespace {

net::SocketAddress socket_path(const std::string& name) {
  return {net::SocketAddress::Kind::kUnix, "/tmp/vmpod-hmp-test-" + std::to_string(::getpid()) + "-" + name, "", 0};
}

// Reads until `until` has appeared in what was read, or 5 s pass.
std::string read_until(int fd, const std::string& until) {
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (got.find(until) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd entry{fd, POLLIN, 0};
    if (::poll(&entry, 1, 100) <= 0) continue;
    char buffer[4096];
    ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    got.append(buffer, static_cast<size_t>(n));
  }
  return got;
}

void send_text(int fd, const std::string& text) {
  cr_assert_eq(::send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
}

net::Fd connect_to(const HmpServer& server) {
  auto fd = net::connect_socket(server.address(), 2s);
  cr_assert(fd.has_value(), "%s", fd ? "" : fd.error().to_string().c_str());
  return std::move(*fd);
}

}  // namespace

Test(hmp_server, banner_prompt_and_one_answer_per_line) {
  std::vector<std::string> seen;
  std::mutex mutex;
  auto server = HmpServer::start(socket_path("basic"), "QEMU test monitor", [&](const std::string& line) {
    std::lock_guard lock(mutex);
    seen.push_back(line);
    if (line == "info status") return std::string("VM status: running\n");
    return line == "info name" ? std::string("vm0\r\n") : std::string();  // QEMU's own text
  });
  cr_assert(server.has_value(), "%s", server ? "" : server.error().to_string().c_str());
  net::Fd fd = connect_to(**server);
  {
    const std::string got = read_until(fd.get(), "(qemu) ");
    cr_expect_str_eq(got.c_str(), "QEMU test monitor\r\n(qemu) ");
  }
  send_text(fd.get(), "info status\r\n");
  {
    const std::string got = read_until(fd.get(), "(qemu) ");
    cr_expect_str_eq(got.c_str(), "VM status: running\r\n(qemu) ");
  }
  send_text(fd.get(), "info name\n");
  {
    const std::string got = read_until(fd.get(), "(qemu) ");
    cr_expect_str_eq(got.c_str(), "vm0\r\n(qemu) ", "a line end that has its \\r keeps only one");
  }
  // Blank lines only prompt again; a command with no output prompts too.
  send_text(fd.get(), "\n   \nstop\n");
  std::string rest;
  for (int prompts = 0; prompts < 3;) {
    std::string part = read_until(fd.get(), "(qemu) ");
    cr_assert(!part.empty());
    for (size_t at = part.find("(qemu) "); at != std::string::npos; at = part.find("(qemu) ", at + 1)) ++prompts;
    rest += part;
  }
  cr_expect_str_eq(rest.c_str(), "(qemu) (qemu) (qemu) ");
  std::lock_guard lock(mutex);
  cr_expect_eq(seen, (std::vector<std::string>{"info status", "info name", "stop"}));
}

Test(hmp_server, an_overlong_line_is_refused_and_the_next_one_served) {
  HmpOptions options;
  options.max_line_bytes = 64;
  auto server = HmpServer::start(
      socket_path("long"), "banner", [](const std::string& line) { return "ran " + line + "\n"; }, options);
  cr_assert(server.has_value());
  net::Fd fd = connect_to(**server);
  read_until(fd.get(), "(qemu) ");
  send_text(fd.get(), std::string(100000, 'x') + "\ninfo\n");
  std::string answer = read_until(fd.get(), "ran info\r\n(qemu) ");
  cr_expect(answer.find("line too long: over 64 bytes\r\n(qemu) ") == 0, "%s", answer.substr(0, 80).c_str());
  cr_expect(answer.find("ran info\r\n(qemu) ") != std::string::npos);
}

Test(hmp_server, clients_are_served_at_once) {
  std::atomic<int> inside{0}, most{0};
  auto server = HmpServer::start(socket_path("many"), "banner", [&](const std::string& line) {
    int now = ++inside;
    for (int seen = most; now > seen && !most.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(200ms);
    --inside;
    return line + "\n";
  });
  cr_assert(server.has_value());
  std::vector<net::Fd> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(connect_to(**server));
    read_until(clients.back().get(), "(qemu) ");
  }
  for (int i = 0; i < 4; ++i) send_text(clients[i].get(), "line" + std::to_string(i) + "\n");
  for (int i = 0; i < 4; ++i) {
    std::string expected = "line" + std::to_string(i) + "\r\n(qemu) ";
    const std::string got = read_until(clients[i].get(), "(qemu) ");
    cr_expect_str_eq(got.c_str(), expected.c_str());
  }
  cr_expect_gt(most.load(), 1, "a slow command held up the other clients");
}

Test(hmp_server, clients_beyond_the_limit_are_told_and_closed) {
  HmpOptions options;
  options.max_clients = 1;
  auto server = HmpServer::start(
      socket_path("limit"), "banner", [](const std::string&) { return std::string(); }, options);
  cr_assert(server.has_value());
  net::Fd first = connect_to(**server);
  read_until(first.get(), "(qemu) ");
  net::Fd second = connect_to(**server);
  std::string refused = read_until(second.get(), "\n");
  cr_expect(refused.find("too many monitor clients") != std::string::npos, "%s", refused.c_str());
  char byte;
  cr_expect_eq(::recv(second.get(), &byte, 1, 0), 0, "the refused client is closed");
}

Test(hmp_server, a_client_that_stops_reading_is_dropped_and_others_go_on) {
  HmpOptions options;
  options.send_timeout = 300ms;
  const std::string big(1 << 20, 'y');
  auto server = HmpServer::start(
      socket_path("stuck"), "banner", [&](const std::string& line) { return line == "big" ? big : "ok\n"; },
      options);
  cr_assert(server.has_value());
  net::Fd stuck = connect_to(**server);
  int small = 4096;
  ::setsockopt(stuck.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  read_until(stuck.get(), "(qemu) ");
  send_text(stuck.get(), std::string("big\n") + "big\n" + "big\n");
  net::Fd other = connect_to(**server);
  read_until(other.get(), "(qemu) ");
  send_text(other.get(), "hello\n");
  {
    const std::string got = read_until(other.get(), "(qemu) ");
    cr_expect_str_eq(got.c_str(), "ok\r\n(qemu) ");
  }
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while ((*server)->client_count() > 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  cr_expect_eq((*server)->client_count(), 1u, "the client that does not read is still connected");
}

Test(hmp_server, stop_with_clients_connected_removes_the_socket) {
  auto server = HmpServer::start(socket_path("stop"), "banner", [](const std::string&) { return std::string(); });
  cr_assert(server.has_value());
  const std::string path = (*server)->address().path;
  net::Fd a = connect_to(**server);
  net::Fd b = connect_to(**server);
  read_until(a.get(), "(qemu) ");
  (*server)->stop();
  cr_expect(!std::filesystem::exists(path));
  char byte;
  cr_expect_eq(::recv(a.get(), &byte, 1, 0), 0, "clients are disconnected");
  (*server)->stop();  // idempotent
}
