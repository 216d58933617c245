// FabricServer/FabricClient over the tcp (tcp;ofi_rxm, pinned to loopback)
// and shm providers, with the address handshake done in-process.
#include <criterion/criterion.h>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include <vmpod/net/fabric.h>

using namespace vmpod;
using namespace vmpod::net;
using namespace std::chrono_literals;

namespace {

// Request: u64 reply_len, u64 seed, payload. reply_len == UINT64_MAX asks for
// an echo of the payload with every byte xored with 0xa5; otherwise the reply
// is reply_len bytes of pattern(seed, i) (clamped to the reply span), and its
// first 8 bytes (when they fit) carry the server's peer handle.
constexpr uint64_t kEcho = UINT64_MAX;

std::byte pattern(uint64_t seed, size_t i) {
  return static_cast<std::byte>((seed * 131 + i * 7 + (i >> 9)) & 0xff);
}

size_t handler(uint64_t peer, std::span<const std::byte> request, std::span<std::byte> reply) {
  if (request.size() < 16) return 0;
  uint64_t reply_len, seed;
  std::memcpy(&reply_len, request.data(), 8);
  std::memcpy(&seed, request.data() + 8, 8);
  if (reply_len == kEcho) {
    size_t n = std::min(request.size() - 16, reply.size());
    for (size_t i = 0; i < n; ++i) reply[i] = request[16 + i] ^ std::byte{0xa5};
    return n;
  }
  size_t n = std::min<size_t>(reply_len, reply.size());
  for (size_t i = 0; i < n; ++i) reply[i] = pattern(seed, i);
  if (n >= 8) std::memcpy(reply.data(), &peer, 8);
  return n;
}

FabricConfig config_for(FabricProvider provider) {
  FabricConfig config;
  config.provider = provider;
  config.node = "127.0.0.1";
  return config;
}

std::unique_ptr<FabricServer> start_server(FabricProvider provider) {
  auto server = FabricServer::start(config_for(provider), handler);
  cr_assert(server.has_value(), "server start: %s", server ? "" : server.error().message().c_str());
  return std::move(*server);
}

struct Connected {
  std::unique_ptr<FabricClient> client;
  uint64_t handle = 0;
};

Connected connect_client(FabricServer& server, FabricProvider provider) {
  auto client = FabricClient::create(config_for(provider));
  cr_assert(client.has_value(), "client create: %s",
            client ? "" : client.error().message().c_str());
  auto handle = server.add_peer((*client)->local_address());
  cr_assert(handle.has_value(), "add_peer: %s", handle ? "" : handle.error().message().c_str());
  auto st = (*client)->connect(server.local_address(), *handle);
  cr_assert(st.has_value(), "connect: %s", st ? "" : st.error().message().c_str());
  return Connected{std::move(*client), *handle};
}

// Asks for a generated reply of reply_len bytes; true when it is all right.
bool generated_call(FabricClient& client, uint64_t handle, uint64_t seed, size_t reply_len,
                    std::vector<std::byte>& reply, std::string* why = nullptr) {
  uint64_t hdr[2] = {reply_len, seed};
  iovec iov{hdr, sizeof(hdr)};
  reply.assign(reply_len, std::byte{0});
  auto n = client.call(std::span<const iovec>(&iov, 1), reply, 5s);
  if (!n) {
    if (why) *why = n.error().to_string();
    return false;
  }
  if (*n != reply_len) return false;
  for (size_t i = 8; i < reply_len; ++i)
    if (reply[i] != pattern(seed, i)) return false;
  if (reply_len >= 8) {
    uint64_t peer;
    std::memcpy(&peer, reply.data(), 8);
    if (peer != handle) return false;
  }
  return true;
}

void check_round_trips(FabricProvider provider) {
  auto server = start_server(provider);
  auto c = connect_client(*server, provider);

  // Small echo from a scattered request.
  uint64_t hdr[2] = {kEcho, 0};
  const char text[] = "hello, fabric";
  iovec iov[2] = {{hdr, sizeof(hdr)}, {const_cast<char*>(text), sizeof(text)}};
  std::vector<std::byte> reply(64);
  auto n = c.client->call(iov, reply, 5s);
  cr_assert(n.has_value(), "small call: %s", n ? "" : n.error().to_string().c_str());
  cr_assert_eq(*n, sizeof(text));
  for (size_t i = 0; i < sizeof(text); ++i)
    cr_assert_eq(reply[i], static_cast<std::byte>(text[i]) ^ std::byte{0xa5});

  // Empty reply is fine.
  std::vector<std::byte> empty;
  cr_assert(generated_call(*c.client, c.handle, 1, 0, empty));

  // 1 MiB request echoed (gathered from three pieces), and a 1 MiB reply.
  const size_t mib = 1u << 20;
  std::vector<std::byte> big(mib);
  for (size_t i = 0; i < mib; ++i) big[i] = pattern(99, i);
  iovec big_iov[3] = {{hdr, sizeof(hdr)}, {big.data(), 1000}, {big.data() + 1000, mib - 1000}};
  reply.assign(mib, std::byte{0});
  n = c.client->call(big_iov, reply, 5s);
  cr_assert(n.has_value(), "1 MiB echo: %s", n ? "" : n.error().to_string().c_str());
  cr_assert_eq(*n, mib);
  for (size_t i = 0; i < mib; ++i) cr_assert_eq(reply[i], big[i] ^ std::byte{0xa5});
  std::string why;
  for (int k = 0; k < 4; ++k)
    cr_assert(generated_call(*c.client, c.handle, 7 + k, mib, reply, &why), "1 MiB reply: %s",
              why.c_str());

  // A reply span smaller than what the handler wants: it gets the smaller span.
  std::vector<std::byte> small(100);
  uint64_t want[2] = {4096, 3};
  iovec want_iov{want, sizeof(want)};
  n = c.client->call(std::span<const iovec>(&want_iov, 1), small, 5s);
  cr_assert(n.has_value());
  cr_assert_eq(*n, 100u);
}

void check_concurrent(FabricProvider provider) {
  auto server = start_server(provider);
  auto c = connect_client(*server, provider);
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> reply;
      for (int i = 0; i < 200; ++i) {
        size_t len = (i % 10 == 0) ? (256u << 10) : 4096 + 8 * static_cast<size_t>(t);
        if (generated_call(*c.client, c.handle, static_cast<uint64_t>(t * 1000 + i), len, reply))
          ok++;
        else
          bad++;
      }
    });
  }
  for (auto& th : threads) th.join();
  cr_assert_eq(bad.load(), 0, "%d calls failed", bad.load());
  cr_assert_eq(ok.load(), 1600);
}

bool write_all(int fd, const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool read_all(int fd, void* data, size_t len) {
  char* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool write_string(int fd, const std::string& s) {
  uint32_t len = static_cast<uint32_t>(s.size());
  return write_all(fd, &len, 4) && write_all(fd, s.data(), s.size());
}

bool read_string(int fd, std::string& s) {
  uint32_t len;
  if (!read_all(fd, &len, 4) || len > 4096) return false;
  s.resize(len);
  return read_all(fd, s.data(), len);
}

// The server lives in a child process (a pod of its own) that is forked
// before this process touches libfabric: it destroys the server and exits
// when told. (Within one process the shm provider shares a peer's region
// with the local endpoint, so an in-process shm server must outlive its
// clients.)
void check_dead_server(FabricProvider provider) {
  int to_child[2], from_child[2];
  cr_assert(pipe(to_child) == 0 && pipe(from_child) == 0);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    close(to_child[1]);
    close(from_child[0]);
    auto server = FabricServer::start(config_for(provider), handler);
    if (!server) _exit(2);
    std::string client_address;
    char command;
    if (!write_string(from_child[1], (*server)->local_address()) ||
        !read_string(to_child[0], client_address))
      _exit(3);
    auto handle = (*server)->add_peer(client_address);
    if (!handle || !write_all(from_child[1], &*handle, 8)) _exit(4);
    if (!read_all(to_child[0], &command, 1)) _exit(5);
    server->reset();
    _exit(0);
  }
  close(to_child[0]);
  close(from_child[1]);
  std::string server_address;
  cr_assert(read_string(from_child[0], server_address));
  auto client = FabricClient::create(config_for(provider));
  cr_assert(client.has_value());
  cr_assert(write_string(to_child[1], (*client)->local_address()));
  uint64_t handle;
  cr_assert(read_all(from_child[0], &handle, 8));
  cr_assert((*client)->connect(server_address, handle).has_value());
  std::vector<std::byte> reply;
  std::string why;
  cr_assert(generated_call(**client, handle, 1, 1u << 20, reply, &why), "%s", why.c_str());

  cr_assert(write_all(to_child[1], "x", 1));
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server child status %d", status);

  for (size_t len : {size_t{4096}, size_t{1} << 20}) {
    uint64_t hdr[2] = {len, 2};
    iovec iov{hdr, sizeof(hdr)};
    reply.assign(len, std::byte{0});
    auto start = std::chrono::steady_clock::now();
    auto n = (*client)->call(std::span<const iovec>(&iov, 1), reply, 300ms);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start).count();
    cr_assert(!n.has_value());
    cr_assert_eq(n.error().code(), ErrorCode::kUnavailable, "%s", n.error().to_string().c_str());
    cr_assert(ms < 1300, "took %lld ms", static_cast<long long>(ms));
  }
  auto close_start = std::chrono::steady_clock::now();
  client->reset();
  cr_assert(std::chrono::steady_clock::now() - close_start < 2s);
  close(to_child[1]);
  close(from_child[0]);
}

// tcp within one process: the server object goes away under the client.
Test(fabric, tcp_in_process_dead_server, .timeout = 20) {
  auto server = start_server(FabricProvider::kTcp);
  auto c = connect_client(*server, FabricProvider::kTcp);
  std::vector<std::byte> reply;
  cr_assert(generated_call(*c.client, c.handle, 1, 4096, reply));
  server.reset();
  uint64_t hdr[2] = {4096, 2};
  iovec iov{hdr, sizeof(hdr)};
  reply.assign(4096, std::byte{0});
  auto start = std::chrono::steady_clock::now();
  auto n = c.client->call(std::span<const iovec>(&iov, 1), reply, 300ms);
  cr_assert(!n.has_value());
  cr_assert_eq(n.error().code(), ErrorCode::kUnavailable);
  cr_assert(std::chrono::steady_clock::now() - start < 1300ms);
  auto close_start = std::chrono::steady_clock::now();
  c.client.reset();
  cr_assert(std::chrono::steady_clock::now() - close_start < 2s);
}

void check_shutdown(FabricProvider provider) {
  auto server = start_server(provider);
  auto c = connect_client(*server, provider);
  // A second client the server answers...
  std::vector<std::byte> reply;
  cr_assert(generated_call(*c.client, c.handle, 1, 128, reply));
  // ...and one with a handle the server does not know: its requests are
  // dropped, so its calls stay in flight until shutdown().
  auto lost = FabricClient::create(config_for(provider));
  cr_assert(lost.has_value());
  auto handle = server->add_peer((*lost)->local_address());
  cr_assert(handle.has_value());
  server->remove_peer(*handle);
  cr_assert((*lost)->connect(server->local_address(), *handle).has_value());

  std::atomic<int> unavailable{0}, fast{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      uint64_t hdr[2] = {64, 5};
      iovec iov{hdr, sizeof(hdr)};
      std::vector<std::byte> r(64);
      auto start = std::chrono::steady_clock::now();
      auto n = (*lost)->call(std::span<const iovec>(&iov, 1), r, 10s);
      if (!n && n.error().code() == ErrorCode::kUnavailable &&
          n.error().message().find("pod gone") != std::string::npos)
        unavailable++;
      if (std::chrono::steady_clock::now() - start < 3s) fast++;
    });
  }
  std::this_thread::sleep_for(200ms);
  (*lost)->shutdown("pod gone");
  for (auto& th : threads) th.join();
  cr_assert_eq(unavailable.load(), 4);
  cr_assert_eq(fast.load(), 4);

  uint64_t hdr[2] = {64, 5};
  iovec iov{hdr, sizeof(hdr)};
  std::vector<std::byte> r(64);
  auto n = (*lost)->call(std::span<const iovec>(&iov, 1), r, 10s);
  cr_assert(!n.has_value());
  cr_assert_eq(n.error().code(), ErrorCode::kUnavailable);
  cr_assert(n.error().message().find("pod gone") != std::string::npos);
  lost->reset();

  // The server kept going for the good client.
  cr_assert(generated_call(*c.client, c.handle, 2, 4096, reply));
  c.client->shutdown("done");
  n = c.client->call(std::span<const iovec>(&iov, 1), r, 1s);
  cr_assert(!n.has_value());
  cr_assert_eq(n.error().code(), ErrorCode::kUnavailable);
}

// Replies that arrive after their call timed out must be consumed, not
// left to block the server's sends: more late 1 MiB replies than the server
// has reply buffers, each followed by a call that must succeed.
void check_late_replies(FabricProvider provider) {
  auto server = FabricServer::start(
      config_for(provider), [](uint64_t peer, std::span<const std::byte> request,
                               std::span<std::byte> reply) {
        uint64_t hdr[2];
        std::memcpy(hdr, request.data(), sizeof(hdr));
        if (hdr[1] == 999) std::this_thread::sleep_for(30ms);  // a slow answer
        return handler(peer, request, reply);
      });
  cr_assert(server.has_value());
  auto c = connect_client(**server, provider);
  const size_t mib = 1u << 20;
  std::vector<std::byte> reply(mib);
  for (int i = 0; i < 12; ++i) {
    uint64_t hdr[2] = {mib, 999};
    iovec iov{hdr, sizeof(hdr)};
    auto n = c.client->call(std::span<const iovec>(&iov, 1), reply, 5ms);
    // (On a loaded machine the caller may wake only after the reply came.)
    if (!n) cr_assert_eq(n.error().code(), ErrorCode::kUnavailable);
    std::string why;
    cr_assert(generated_call(*c.client, c.handle, static_cast<uint64_t>(i), mib, reply, &why),
              "call after a late reply (round %d): %s", i, why.c_str());
  }
}

// Calls in two halves: several started before any is waited for, waited in
// another order, replies read in place; one dropped unwaited (abandoned)
// while its reply is on the way; the client keeps working and closes cleanly.
void check_pending_calls(FabricProvider provider) {
  auto server = start_server(provider);
  auto c = connect_client(*server, provider);
  const size_t sizes[] = {1u << 20, 4096, 64u << 10, 0};
  uint64_t headers[4][2];
  std::vector<FabricClient::PendingCall> calls;
  for (size_t k = 0; k < 4; ++k) {
    headers[k][0] = sizes[k];
    headers[k][1] = 40 + k;
    iovec iov{headers[k], sizeof(headers[k])};
    auto call = c.client->start(std::span<const iovec>(&iov, 1), sizes[k], 5s);
    cr_assert(call.has_value(), "start %zu: %s", k, call ? "" : call.error().to_string().c_str());
    calls.push_back(std::move(*call));
  }
  for (size_t k = 4; k-- > 0;) {
    auto body = c.client->wait(calls[k]);
    cr_assert(body.has_value(), "wait %zu: %s", k, body ? "" : body.error().to_string().c_str());
    cr_assert_eq(body->size(), sizes[k]);
    for (size_t i = 8; i < sizes[k]; ++i) cr_assert_eq((*body)[i], pattern(40 + k, i), "call %zu byte %zu", k, i);
    if (sizes[k] >= 8) {
      uint64_t peer;
      std::memcpy(&peer, body->data(), 8);
      cr_assert_eq(peer, c.handle);
    }
  }
  auto again = c.client->wait(calls[0]);
  cr_assert(!again.has_value(), "a call waited for twice");
  cr_assert_eq(again.error().code(), ErrorCode::kWrongState);
  calls.clear();

  for (int round = 0; round < 3; ++round) {
    uint64_t hdr[2] = {1u << 20, 77};
    iovec iov{hdr, sizeof(hdr)};
    auto dropped = c.client->start(std::span<const iovec>(&iov, 1), 1u << 20, 5s);
    cr_assert(dropped.has_value());
  }
  std::vector<std::byte> reply;
  std::string why;
  cr_assert(generated_call(*c.client, c.handle, 5, 1u << 20, reply, &why), "after abandoned calls: %s",
            why.c_str());
}

// A peer that never answers: more timed-out calls than the client keeps
// receives posted for, then a clean close.
void check_many_timeouts(FabricProvider provider) {
  auto server = start_server(provider);
  auto client = FabricClient::create(config_for(provider));
  cr_assert(client.has_value());
  auto handle = server->add_peer((*client)->local_address());
  cr_assert(handle.has_value());
  server->remove_peer(*handle);  // its requests are now dropped
  cr_assert((*client)->connect(server->local_address(), *handle).has_value());
  uint64_t hdr[2] = {4096, 1};
  iovec iov{hdr, sizeof(hdr)};
  std::vector<std::byte> reply(4096);
  for (int i = 0; i < 80; ++i) {
    auto n = (*client)->call(std::span<const iovec>(&iov, 1), reply, 1ms);
    cr_assert(!n.has_value());
    cr_assert_eq(n.error().code(), ErrorCode::kUnavailable);
  }
  client->reset();
}

// A handler that throws or overruns its reply span fails that call with
// kInternal; the server keeps serving.
void check_handler_errors(FabricProvider provider) {
  auto server = FabricServer::start(
      config_for(provider), [](uint64_t peer, std::span<const std::byte> request,
                               std::span<std::byte> reply) -> size_t {
        uint64_t hdr[2];
        std::memcpy(hdr, request.data(), sizeof(hdr));
        if (hdr[1] == 13) throw std::runtime_error("unlucky");
        if (hdr[1] == 14) return reply.size() + 1;
        return handler(peer, request, reply);
      });
  cr_assert(server.has_value());
  auto c = connect_client(**server, provider);
  std::vector<std::byte> reply(64);
  for (uint64_t seed : {13, 14}) {
    uint64_t hdr[2] = {64, seed};
    iovec iov{hdr, sizeof(hdr)};
    auto n = c.client->call(std::span<const iovec>(&iov, 1), reply, 5s);
    cr_assert(!n.has_value());
    cr_assert_eq(n.error().code(), ErrorCode::kInternal, "%s", n.error().to_string().c_str());
  }
  cr_assert(generated_call(*c.client, c.handle, 1, 64, reply));
}

void check_two_clients(FabricProvider provider) {
  auto server = start_server(provider);
  auto a = connect_client(*server, provider);
  auto b = connect_client(*server, provider);
  cr_assert_neq(a.handle, b.handle);
  std::vector<std::byte> reply;
  std::atomic<int> bad{0};
  std::thread ta([&] {
    std::vector<std::byte> r;
    for (int i = 0; i < 100; ++i)
      if (!generated_call(*a.client, a.handle, static_cast<uint64_t>(i), 8192, r)) bad++;
  });
  std::thread tb([&] {
    std::vector<std::byte> r;
    for (int i = 0; i < 100; ++i)
      if (!generated_call(*b.client, b.handle, static_cast<uint64_t>(i + 500), 8192, r)) bad++;
  });
  ta.join();
  tb.join();
  cr_assert_eq(bad.load(), 0);
}

void check_oversized(FabricProvider provider) {
  auto server = start_server(provider);
  auto c = connect_client(*server, provider);
  FabricConfig config = config_for(provider);
  std::vector<std::byte> big(config.max_message + 1);
  iovec iov{big.data(), big.size()};
  std::vector<std::byte> reply(16);
  auto n = c.client->call(std::span<const iovec>(&iov, 1), reply, 1s);
  cr_assert(!n.has_value());
  cr_assert_eq(n.error().code(), ErrorCode::kInvalidArgument);
  // Exactly max_message is fine (an echo of max_message - 16 bytes).
  uint64_t hdr[2] = {kEcho, 0};
  iovec ok[2] = {{hdr, sizeof(hdr)}, {big.data(), config.max_message - sizeof(hdr)}};
  reply.assign(config.max_message, std::byte{0});
  n = c.client->call(ok, reply, 5s);
  cr_assert(n.has_value(), "%s", n ? "" : n.error().to_string().c_str());
  cr_assert_eq(*n, config.max_message - sizeof(hdr));
}

void check_bad_addresses(FabricProvider provider) {
  auto server = start_server(provider);
  auto bad = server->add_peer("");
  cr_assert(!bad.has_value());
  cr_assert_eq(bad.error().code(), ErrorCode::kInvalidArgument);
  auto client = FabricClient::create(config_for(provider));
  cr_assert(client.has_value());
  // Not connected yet.
  std::vector<std::byte> reply(16);
  uint64_t hdr[2] = {8, 1};
  iovec iov{hdr, sizeof(hdr)};
  auto n = (*client)->call(std::span<const iovec>(&iov, 1), reply, 1s);
  cr_assert(!n.has_value());
  cr_assert_eq(n.error().code(), ErrorCode::kWrongState);
  cr_assert(!(*client)->connect("x", 1).has_value());
}

}  // namespace

Test(fabric, provider_names) {
  cr_assert(parse_fabric_provider("tcp") == FabricProvider::kTcp);
  cr_assert(parse_fabric_provider("shm") == FabricProvider::kShm);
  cr_assert(parse_fabric_provider("verbs") == FabricProvider::kVerbs);
  auto bad = parse_fabric_provider("udp");
  cr_assert(!bad.has_value());
  cr_assert_eq(bad.error().code(), ErrorCode::kInvalidArgument);
  for (auto p : {FabricProvider::kTcp, FabricProvider::kShm, FabricProvider::kVerbs})
    cr_assert(parse_fabric_provider(fabric_provider_name(p)) == p);
}

// No RDMA device here: verbs must fail cleanly, not crash.
Test(fabric, verbs_unavailable_is_an_error, .timeout = 10) {
  FabricConfig config = config_for(FabricProvider::kVerbs);
  auto server = FabricServer::start(config, handler);
  if (server.has_value()) return;  // a host with an RDMA NIC
  cr_assert_eq(server.error().code(), ErrorCode::kUnavailable);
  cr_assert(server.error().message().find("fi_getinfo") != std::string::npos,
            "%s", server.error().message().c_str());
}

Test(fabric, tcp_round_trips, .timeout = 20) { check_round_trips(FabricProvider::kTcp); }
Test(fabric, shm_round_trips, .timeout = 20) { check_round_trips(FabricProvider::kShm); }
Test(fabric, tcp_concurrent, .timeout = 30) { check_concurrent(FabricProvider::kTcp); }
Test(fabric, shm_concurrent, .timeout = 30) { check_concurrent(FabricProvider::kShm); }
Test(fabric, tcp_dead_server, .timeout = 20) { check_dead_server(FabricProvider::kTcp); }
Test(fabric, shm_dead_server, .timeout = 20) { check_dead_server(FabricProvider::kShm); }
Test(fabric, tcp_shutdown, .timeout = 20) { check_shutdown(FabricProvider::kTcp); }
Test(fabric, shm_shutdown, .timeout = 20) { check_shutdown(FabricProvider::kShm); }
Test(fabric, tcp_two_clients, .timeout = 20) { check_two_clients(FabricProvider::kTcp); }
Test(fabric, shm_two_clients, .timeout = 20) { check_two_clients(FabricProvider::kShm); }
Test(fabric, tcp_oversized, .timeout = 20) { check_oversized(FabricProvider::kTcp); }
Test(fabric, shm_oversized, .timeout = 20) { check_oversized(FabricProvider::kShm); }
Test(fabric, tcp_late_replies, .timeout = 20) { check_late_replies(FabricProvider::kTcp); }
Test(fabric, shm_late_replies, .timeout = 20) { check_late_replies(FabricProvider::kShm); }
Test(fabric, tcp_many_timeouts, .timeout = 20) { check_many_timeouts(FabricProvider::kTcp); }
Test(fabric, shm_many_timeouts, .timeout = 20) { check_many_timeouts(FabricProvider::kShm); }
Test(fabric, tcp_handler_errors, .timeout = 20) { check_handler_errors(FabricProvider::kTcp); }
Test(fabric, shm_handler_errors, .timeout = 20) { check_handler_errors(FabricProvider::kShm); }
Test(fabric, tcp_pending_calls, .timeout = 20) { check_pending_calls(FabricProvider::kTcp); }
Test(fabric, shm_pending_calls, .timeout = 20) { check_pending_calls(FabricProvider::kShm); }
Test(fabric, tcp_bad_addresses, .timeout = 20) { check_bad_addresses(FabricProvider::kTcp); }
Test(fabric, shm_bad_addresses, .timeout = 20) { check_bad_addresses(FabricProvider::kShm); }
