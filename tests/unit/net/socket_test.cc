#include <vmpod/net/socket.h>

#include <fcntl.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <criterion/criterion.h>

using namespace vmpod;
using namespace vmpod::net;
using namespace std::chrono_literals;

namespace {

constexpr uint16_t kEcho = 1;
constexpr uint16_t kFail = 2;
constexpr uint16_t kSleep = 3;

// A fresh directory per test for unix socket paths, removed at the end.
struct TempDir {
  TempDir() {
    char pattern[] = "/tmp/vmpod-socket-test-XXXXXX";
    cr_assert(::mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

SocketAddress parse(const std::string& text) {
  auto address = parse_socket_address(text);
  cr_assert(address.has_value(), "%s: %s", text.c_str(),
            address ? "" : address.error().message().c_str());
  return *address;
}

Result<std::string> test_handler(const Frame& request, const PeerInfo&) {
  switch (request.type) {
    case kEcho: return "echo:" + request.body;
    case kFail: return fail(ErrorCode::kNotFound, "no pod '" + request.body + "'");
    case kSleep:
      std::this_thread::sleep_for(300ms);
      return std::string("late");
    default: return fail(ErrorCode::kInvalidArgument, "unknown type");
  }
}

std::unique_ptr<RpcServer> start_server(const SocketAddress& address, uint32_t max_body = 1024,
                                        RpcServer::DisconnectHandler on_disconnect = {}) {
  auto server = RpcServer::start(address, test_handler, std::move(on_disconnect), max_body);
  cr_assert(server.has_value(), "start %s: %s", address.to_string().c_str(),
            server ? "" : server.error().message().c_str());
  return std::move(*server);
}

std::unique_ptr<RpcClient> connect_client(const SocketAddress& address) {
  auto client = RpcClient::connect(address, 1s);
  cr_assert(client.has_value(), "connect %s: %s", address.to_string().c_str(),
            client ? "" : client.error().message().c_str());
  return std::move(*client);
}

void expect_echo(RpcClient& client, const std::string& body) {
  auto reply = client.call(kEcho, body, 2s);
  cr_assert(reply.has_value(), "echo: %s", reply ? "" : reply.error().message().c_str());
  cr_expect(*reply == "echo:" + body);
}

// True when the server closed the raw connection (reads EOF or a reset).
bool closed_by_peer(int fd) {
  char byte;
  struct timeval tv = {2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ssize_t n = ::recv(fd, &byte, 1, 0);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

void send_raw(int fd, const std::string& bytes) {
  cr_assert_eq(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
               static_cast<ssize_t>(bytes.size()));
}

std::string header_with_length(uint32_t body_len) {
  std::string header = encode_frame(Frame{kEcho, 0, 1, ""});
  for (int i = 0; i < 4; ++i) header[4 + i] = static_cast<char>(body_len >> (8 * i));
  return header;
}

// Virtual memory in KiB. A finished but unjoined thread keeps its stack
// (8 MiB by default) mapped while its task is gone from /proc/self/task, so
// this is what shows threads that were never reaped.
long vm_size_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmSize:")) return std::stol(line.substr(7));
  }
  return -1;
}

// --- scenarios run over both unix and tcp ---

void check_echo_and_error(const SocketAddress& address) {
  auto server = start_server(address);
  auto client = connect_client(server->address());
  cr_expect(client->connected());
  expect_echo(*client, "hello");
  expect_echo(*client, "");
  expect_echo(*client, std::string(1000, '\x01'));

  auto failed = client->call(kFail, "web-1", 2s);
  cr_assert(!failed.has_value());
  cr_expect_eq(failed.error().code(), ErrorCode::kNotFound);
  cr_expect(failed.error().message() == "no pod 'web-1'", "%s", failed.error().message().c_str());
  // An error reply is an answer, not a broken connection.
  cr_expect(client->connected());
  expect_echo(*client, "after error");
}

void check_concurrent_calls(const SocketAddress& address) {
  auto server = start_server(address);
  auto shared = connect_client(server->address());
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      // Half the threads share one client, half have their own, so both the
      // client's serialization and concurrent handler calls are exercised.
      std::unique_ptr<RpcClient> own;
      if (t % 2) own = std::move(*RpcClient::connect(server->address(), 1s));
      RpcClient& client = own ? *own : *shared;
      for (int i = 0; i < 50; ++i) {
        std::string body = std::to_string(t) + "/" + std::to_string(i);
        auto reply = client.call(kEcho, body, 2s);
        if (reply && *reply == "echo:" + body) ++good;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  cr_expect_eq(good.load(), 8 * 50);
}

void check_survives_bad_clients(const SocketAddress& address) {
  std::atomic<int> disconnects{0};
  auto server = start_server(address, 1024, [&](const PeerInfo&) { ++disconnects; });

  auto raw = [&] {
    auto fd = connect_socket(server->address(), 1s);
    cr_assert(fd.has_value());
    return std::move(*fd);
  };
  {
    Fd fd = raw();
    send_raw(fd.get(), "this is not a frame at all\r\n");
    cr_expect(closed_by_peer(fd.get()), "garbage did not close the connection");
  }
  {
    // The body is never sent: the server must refuse on the header alone.
    Fd fd = raw();
    send_raw(fd.get(), header_with_length(1025));
    cr_expect(closed_by_peer(fd.get()), "oversized header did not close the connection");
  }
  {
    Fd fd = raw();
    send_raw(fd.get(), encode_frame(Frame{kEcho, kFrameReply, 1, "a reply?"}));
    cr_expect(closed_by_peer(fd.get()), "reply frame from a client did not close the connection");
  }
  {
    Fd fd = raw();
    send_raw(fd.get(), encode_frame(Frame{kEcho, 0, 1, "truncated"}).substr(0, 25));
  }  // closed mid-frame
  {
    Fd fd = raw();
    send_raw(fd.get(), encode_frame(Frame{kEcho, 0, 1, "x"}).substr(0, 7));
  }  // closed mid-header

  auto client = connect_client(server->address());
  expect_echo(*client, "still serving");
  client.reset();
  for (int i = 0; i < 200 && disconnects < 6; ++i) std::this_thread::sleep_for(5ms);
  cr_expect_eq(disconnects.load(), 6);
}

void check_timeout(const SocketAddress& address) {
  auto server = start_server(address);
  auto client = connect_client(server->address());
  auto start = std::chrono::steady_clock::now();
  auto late = client->call(kSleep, "", 50ms);
  auto waited = std::chrono::steady_clock::now() - start;
  cr_assert(!late.has_value());
  cr_expect_eq(late.error().code(), ErrorCode::kUnavailable);
  cr_expect(late.error().message().find("no reply within 50 ms") != std::string::npos, "%s",
            late.error().message().c_str());
  cr_expect(waited >= 50ms && waited < 250ms);
  cr_expect(!client->connected());

  // Broken for good, and failing at once rather than after another timeout.
  start = std::chrono::steady_clock::now();
  auto again = client->call(kEcho, "x", 1s);
  cr_assert(!again.has_value());
  cr_expect_eq(again.error().code(), ErrorCode::kUnavailable);
  cr_expect(std::chrono::steady_clock::now() - start < 50ms);

  // The server is unaffected.
  expect_echo(*connect_client(server->address()), "fresh");
}

void check_server_stop(const SocketAddress& address) {
  auto server = start_server(address);
  SocketAddress real = server->address();
  auto client = connect_client(real);
  expect_echo(*client, "before");
  server->stop();
  auto after = client->call(kEcho, "after", 1s);
  cr_assert(!after.has_value());
  cr_expect_eq(after.error().code(), ErrorCode::kUnavailable);
  cr_expect(!client->connected());

  auto refused = RpcClient::connect(real, 1s);
  cr_assert(!refused.has_value());
  cr_expect_eq(refused.error().code(), ErrorCode::kUnavailable, "%s",
                refused.error().message().c_str());
  server->stop();  // idempotent
}

}  // namespace

// --- addresses ---

Test(address, parses_and_round_trips) {
  struct Case {
    const char* text;
    SocketAddress::Kind kind;
    const char* path_or_host;
    uint16_t port;
  };
  const Case cases[] = {
      {"unix:/run/vmpod/pod.sock", SocketAddress::Kind::kUnix, "/run/vmpod/pod.sock", 0},
      {"unix:relative/ctl.sock", SocketAddress::Kind::kUnix, "relative/ctl.sock", 0},
      {"unix:/with:colon", SocketAddress::Kind::kUnix, "/with:colon", 0},
      {"tcp:127.0.0.1:4000", SocketAddress::Kind::kTcp, "127.0.0.1", 4000},
      {"tcp:0.0.0.0:0", SocketAddress::Kind::kTcp, "0.0.0.0", 0},
      {"tcp:localhost:65535", SocketAddress::Kind::kTcp, "localhost", 65535},
      {"tcp:[::1]:5000", SocketAddress::Kind::kTcp, "::1", 5000},
      {"tcp:[fe80::1:2]:1", SocketAddress::Kind::kTcp, "fe80::1:2", 1},
  };
  for (const auto& c : cases) {
    auto address = parse_socket_address(c.text);
    cr_assert(address.has_value(), "%s: %s", c.text,
              address ? "" : address.error().message().c_str());
    cr_expect(address->kind == c.kind, "%s", c.text);
    if (c.kind == SocketAddress::Kind::kUnix) {
      cr_expect(address->path == c.path_or_host, "%s", c.text);
    } else {
      cr_expect(address->host == c.path_or_host, "%s", c.text);
      cr_expect_eq(address->port, c.port, "%s", c.text);
    }
    cr_expect(address->to_string() == c.text, "%s -> %s", c.text, address->to_string().c_str());
  }
}

Test(address, rejects_bad_text) {
  const std::string bad[] = {
      "",
      "unix:",
      "unix",
      "UNIX:/x",
      "udp:127.0.0.1:53",
      "/run/pod.sock",
      std::string("unix:/a\0b", 9),
      "unix:/" + std::string(200, 'x'),
      "tcp:",
      "tcp:127.0.0.1",
      "tcp:127.0.0.1:",
      "tcp::4000",
      "tcp:127.0.0.1:65536",
      "tcp:127.0.0.1:99999999999",
      "tcp:127.0.0.1:-1",
      "tcp:127.0.0.1:+1",
      "tcp:127.0.0.1:80x",
      "tcp:127.0.0.1: 80",
      "tcp:127.0.0:80",
      "tcp:example.com:80",
      "tcp:::1:80",
      "tcp:[::1]80",
      "tcp:[::1]:",
      "tcp:[::1",
      "tcp:[]:80",
      "tcp:[127.0.0.1]:80",
  };
  for (const auto& text : bad) {
    auto address = parse_socket_address(text);
    cr_expect(!address.has_value(), "accepted '%s'", text.c_str());
    if (!address) cr_expect_eq(address.error().code(), ErrorCode::kInvalidArgument);
  }
}

// --- framed I/O on a socketpair ---

Test(socket, frame_io_round_trip_and_eof) {
  int pair[2];
  cr_assert_eq(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Fd a(pair[0]), b(pair[1]);
  // Bigger than a socket buffer, so both sides loop over partial transfers.
  Frame big{9, kFrameReply, 77, std::string(3 << 20, 'z')};
  std::thread writer([&] { cr_expect(write_frame(a.get(), big).has_value()); });
  auto got = read_frame(b.get());
  writer.join();
  cr_assert(got.has_value());
  cr_expect_eq(got->type, 9);
  cr_expect_eq(got->flags, kFrameReply);
  cr_expect_eq(got->request_id, 77);
  cr_expect(got->body == big.body);

  a.reset();
  auto eof = read_frame(b.get());
  cr_assert(!eof.has_value());
  cr_expect_eq(eof.error().code(), ErrorCode::kUnavailable);
  cr_expect(eof.error().message() == "connection closed");
}

Test(socket, read_frame_refuses_oversized_body_unread) {
  int pair[2];
  cr_assert_eq(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Fd a(pair[0]), b(pair[1]);
  send_raw(a.get(), header_with_length(11) + "body bytes!");
  auto got = read_frame(b.get(), 10);
  cr_assert(!got.has_value());
  cr_expect_eq(got.error().code(), ErrorCode::kInvalidArgument);
  cr_expect(got.error().message() == "frame body of 11 bytes exceeds limit 10");
  char rest[32];
  cr_expect_eq(::recv(b.get(), rest, sizeof(rest), MSG_DONTWAIT), 11, "body was consumed");
}

Test(socket, read_frame_truncated_is_unavailable) {
  int pair[2];
  cr_assert_eq(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Fd a(pair[0]), b(pair[1]);
  send_raw(a.get(), encode_frame(Frame{1, 0, 1, "0123456789"}).substr(0, 24));
  a.reset();
  auto got = read_frame(b.get());
  cr_assert(!got.has_value());
  cr_expect_eq(got.error().code(), ErrorCode::kUnavailable);
  cr_expect(got.error().message() == "connection closed mid-frame");
}

Test(socket, fd_moves_and_closes) {
  int pair[2];
  cr_assert_eq(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  Fd a(pair[0]);
  Fd b(pair[1]);
  Fd moved(std::move(a));
  cr_expect(!a);
  cr_expect_eq(moved.get(), pair[0]);
  moved = std::move(b);  // closes pair[0]
  cr_expect_eq(::fcntl(pair[0], F_GETFD), -1);
  moved.reset();
  cr_expect_eq(::fcntl(pair[1], F_GETFD), -1);
}

// --- listening ---

Test(socket, listen_replaces_stale_unix_socket_only) {
  TempDir dir;
  SocketAddress address = parse("unix:" + dir.path + "/ctl.sock");
  {
    auto stale = listen_socket(address);  // closed without unlinking, as by a crash
    cr_assert(stale.has_value());
  }
  auto server = start_server(address);
  expect_echo(*connect_client(address), "replaced stale");

  // A live server keeps its path.
  auto second = RpcServer::start(address, test_handler);
  cr_assert(!second.has_value());
  cr_expect_eq(second.error().code(), ErrorCode::kAlreadyExists);
  expect_echo(*connect_client(address), "still the first");

  server->stop();
  cr_expect(!std::filesystem::exists(address.path), "stop() left the socket file");

  // Something that is not a socket is never removed.
  std::ofstream(address.path) << "precious";
  cr_expect(!listen_socket(address).has_value());
  cr_expect(std::filesystem::is_regular_file(address.path));
}

Test(socket, tcp_port_zero_resolves_to_kernel_port) {
  auto server = start_server(parse("tcp:127.0.0.1:0"));
  cr_expect(server->address().kind == SocketAddress::Kind::kTcp);
  cr_expect(server->address().host == "127.0.0.1");
  cr_expect_neq(server->address().port, 0);
}

Test(socket, peer_description) {
  std::string seen;
  std::mutex mutex;
  auto server = RpcServer::start(parse("tcp:127.0.0.1:0"), [&](const Frame&, const PeerInfo& peer) {
    std::lock_guard lock(mutex);
    seen = peer.description;
    return Result<std::string>("");
  });
  cr_assert(server.has_value());
  auto client = connect_client((*server)->address());
  cr_assert(client->call(kEcho, "").has_value());
  std::lock_guard lock(mutex);
  cr_expect(seen.starts_with("tcp 127.0.0.1:"), "%s", seen.c_str());
}

Test(socket, finished_client_threads_are_reaped) {
  // One malloc arena, so the 64 MiB arenas glibc makes for new threads do
  // not swamp the stacks being measured.
  ::mallopt(M_ARENA_MAX, 1);
  std::atomic<int> disconnects{0};
  auto server = start_server(parse("tcp:127.0.0.1:0"), 1024, [&](const PeerInfo&) { ++disconnects; });
  expect_echo(*connect_client(server->address()), "warm up");
  long before = vm_size_kib();
  for (int i = 0; i < 40; ++i) {
    expect_echo(*connect_client(server->address()), "short");
    for (int wait = 0; wait < 200 && disconnects <= i + 1; ++wait) std::this_thread::sleep_for(1ms);
  }
  // The accept thread joins finished client threads on each accept; 40
  // unreaped ones would hold some 320 MiB of stacks.
  long grown = vm_size_kib() - before;
  cr_expect_lt(grown, 64 * 1024, "grew by %ld KiB", grown);
}

Test(socket, handler_exception_becomes_internal_error) {
  auto server = RpcServer::start(parse("tcp:127.0.0.1:0"),
                                 [](const Frame&, const PeerInfo&) -> Result<std::string> {
                                   throw std::runtime_error("boom");
                                 });
  cr_assert(server.has_value());
  auto client = connect_client((*server)->address());
  auto reply = client->call(kEcho, "x");
  cr_assert(!reply.has_value());
  cr_expect_eq(reply.error().code(), ErrorCode::kInternal);
  cr_expect(client->connected());
}

Test(socket, connect_refused_is_unavailable) {
  SocketAddress address;
  {
    auto server = start_server(parse("tcp:127.0.0.1:0"));
    address = server->address();
  }
  auto client = RpcClient::connect(address, 1s);
  cr_assert(!client.has_value());
  cr_expect_eq(client.error().code(), ErrorCode::kUnavailable);
}

// --- client and server, over unix and tcp ---

Test(rpc_unix, echo_and_error) {
  TempDir dir;
  check_echo_and_error(parse("unix:" + dir.path + "/ctl.sock"));
}
Test(rpc_tcp, echo_and_error) { check_echo_and_error(parse("tcp:127.0.0.1:0")); }

Test(rpc_unix, concurrent_calls) {
  TempDir dir;
  check_concurrent_calls(parse("unix:" + dir.path + "/ctl.sock"));
}
Test(rpc_tcp, concurrent_calls) { check_concurrent_calls(parse("tcp:127.0.0.1:0")); }

Test(rpc_unix, survives_bad_clients) {
  TempDir dir;
  check_survives_bad_clients(parse("unix:" + dir.path + "/ctl.sock"));
}
Test(rpc_tcp, survives_bad_clients) { check_survives_bad_clients(parse("tcp:127.0.0.1:0")); }

Test(rpc_unix, call_timeout_breaks_client) {
  TempDir dir;
  check_timeout(parse("unix:" + dir.path + "/ctl.sock"));
}
Test(rpc_tcp, call_timeout_breaks_client) { check_timeout(parse("tcp:127.0.0.1:0")); }

Test(rpc_unix, server_stop) {
  TempDir dir;
  check_server_stop(parse("unix:" + dir.path + "/ctl.sock"));
}
Test(rpc_tcp, server_stop) { check_server_stop(parse("tcp:127.0.0.1:0")); }
