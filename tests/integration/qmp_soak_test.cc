// 64 clients issue commands on one VM's endpoint in a loop for 30 s while
// other clients misbehave: malformed JSON, a line of several megabytes,
// binary garbage, a client that never reads, clients that leave in the
// middle of a reply. Every well-behaved command gets its reply, matched by
// id; the misbehaving connections are answered or closed; the vmm's memory
// stays flat.
#include <criterion/criterion.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr int kClients = 64;
constexpr auto kSoak = 30s;
constexpr auto kWarmUp = 5s;
// What the vmm may grow by between the end of the warm-up and the end.
constexpr uint64_t kFlatBytes = 8ull << 20;

struct Tally {
  std::atomic<uint64_t> replies{0};
  std::mutex mutex;
  std::vector<std::string> failures;

  void failed(std::string what) {
    std::lock_guard lock(mutex);
    if (failures.size() < 20) failures.push_back(std::move(what));
  }
};

// One well-behaved client: commands that end in QEMU, in the vmm, and in
// QEMU's HMP, each with its own id, until the deadline.
void good_client(const std::string& endpoint, int index, std::chrono::steady_clock::time_point deadline,
                 Tally& tally) {
  auto client = qmp::QmpClient::connect(testing::unix_socket(endpoint), 10s);
  if (!client) return tally.failed("client " + std::to_string(index) + ": " + client.error().to_string());
  const json commands[] = {
      {{"execute", "query-status"}},
      {{"execute", "x-vmpod-query-vm"}},
      {{"execute", "query-name"}},
      {{"execute", "human-monitor-command"}, {"arguments", {{"command-line", "info status"}}}},
  };
  for (uint64_t n = 0; std::chrono::steady_clock::now() < deadline; ++n) {
    json request = commands[n % std::size(commands)];
    const std::string id = std::to_string(index) + "-" + std::to_string(n);
    request["id"] = id;
    auto reply = (*client)->execute_raw(request, 60s);
    if (!reply) return tally.failed(id + ": " + reply.error().to_string());
    if (reply->value("id", json()) != id) return tally.failed(id + ": reply for " + reply->dump());
    if (!reply->contains("return")) return tally.failed(id + ": " + reply->dump());
    ++tally.replies;
  }
}

net::Fd raw_connect(const std::string& endpoint) {
  auto fd = net::connect_socket(testing::unix_socket(endpoint), 10s);
  cr_assert(fd.has_value(), "%s", fd ? "" : fd.error().to_string().c_str());
  return std::move(*fd);
}

// Waits, without reading, for the server to close its end.
bool closed_by_server(int fd, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd entry{fd, POLLRDHUP, 0};
    if (::poll(&entry, 1, 200) > 0 && (entry.revents & (POLLRDHUP | POLLHUP))) return true;
  }
  return false;
}

// Each kind of bad input; each must leave the endpoint serving others.
void bad_clients(const std::string& endpoint, Tally& tally) {
  {
    // Malformed JSON gets QEMU's parse error; the connection goes on.
    testing::RawQmp client(testing::unix_socket(endpoint));
    client.send("{\"execute\": \"qmp_capabilities\"}\n");
    client.reply();
    client.send("{\"execute\": ]\n");
    json error = client.reply();
    if (error["error"].value("desc", "").find("JSON parse error") == std::string::npos) {
      tally.failed("malformed JSON: " + error.dump());
    }
    client.send("{\"execute\": \"query-status\", \"id\": \"after\"}\n");
    if (client.reply()["id"] != "after") tally.failed("malformed JSON: the connection did not recover");
  }
  {
    // A line of several megabytes: refused, not buffered without end.
    testing::RawQmp client(testing::unix_socket(endpoint));
    client.send("{\"execute\": \"qmp_capabilities\"}\n");
    client.reply();
    client.send("{\"execute\": \"query-status\", \"arguments\": {\"x\": \"" + std::string(6 << 20, 'A') + "\"}}\n");
    json error = client.reply();
    if (!error.contains("error")) tally.failed("a 6 MB line was not refused: " + error.dump().substr(0, 200));
    client.send("{\"execute\": \"query-status\", \"id\": \"after-big\"}\n");
    if (client.reply()["id"] != "after-big") tally.failed("a 6 MB line: the connection did not recover");
  }
  {
    // Binary garbage, 0xFF and NULs included: answered with errors or closed.
    net::Fd fd = raw_connect(endpoint);
    std::mt19937 random(7);
    std::string garbage(256 * 1024, '\0');
    for (char& byte : garbage) byte = static_cast<char>(random());
    ::fcntl(fd.get(), F_SETFL, O_NONBLOCK);
    (void)!::send(fd.get(), garbage.data(), garbage.size(), MSG_NOSIGNAL);
  }
  // A client that asks for large replies and never reads is dropped once
  // its unread output passes the bound.
  net::Fd silent = raw_connect(endpoint);
  ::fcntl(silent.get(), F_SETFL, O_NONBLOCK);
  std::string ask = "{\"execute\": \"qmp_capabilities\"}\n";
  for (int i = 0; i < 400; ++i) ask += "{\"execute\": \"query-qmp-schema\"}\n";
  size_t sent = 0;
  auto until = std::chrono::steady_clock::now() + 20s;
  while (sent < ask.size() && std::chrono::steady_clock::now() < until) {
    ssize_t n = ::send(silent.get(), ask.data() + sent, ask.size() - sent, MSG_NOSIGNAL);
    if (n > 0) sent += static_cast<size_t>(n);
    else if (n < 0 && errno != EAGAIN) break;  // dropped already
    else std::this_thread::sleep_for(20ms);
  }
  // Clients that leave in the middle of a reply.
  for (int i = 0; i < 20; ++i) {
    net::Fd fd = raw_connect(endpoint);
    std::string text = "{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"query-qmp-schema\"}\n";
    (void)!::send(fd.get(), text.data(), text.size(), MSG_NOSIGNAL);
    char some[300];
    (void)!::recv(fd.get(), some, sizeof(some), 0);
  }
  if (!closed_by_server(silent.get(), 60s)) tally.failed("the client that never reads was not dropped");
}

}  // namespace

Test(qmp_soak, sixty_four_clients_for_thirty_seconds_beside_bad_ones, .timeout = 300,
     .fini = vmpod::testing::stop_all) {
  auto guest = testing::boot_guest("qmp-soak", {});
  const pid_t vmm_pid = guest->cluster->vmm_pid();
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + kSoak;
  Tally tally;
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back(good_client, guest->vm.qmp_endpoint, i, deadline, std::ref(tally));
  }
  std::thread bad(bad_clients, guest->vm.qmp_endpoint, std::ref(tally));

  std::this_thread::sleep_until(start + kWarmUp);
  const uint64_t warm = testing::resident_bytes(vmm_pid);
  uint64_t peak = warm;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1s);
    peak = std::max(peak, testing::resident_bytes(vmm_pid));
  }
  for (auto& client : clients) client.join();
  bad.join();
  const uint64_t end = testing::resident_bytes(vmm_pid);
  std::fprintf(stderr, "qmp soak: %lu replies from %d clients in %lld s; vmm RSS %lu KiB after warm-up, peak %lu KiB, %lu KiB at the end\n",
               static_cast<unsigned long>(tally.replies.load()), kClients, static_cast<long long>(kSoak.count()),
               static_cast<unsigned long>(warm >> 10), static_cast<unsigned long>(peak >> 10),
               static_cast<unsigned long>(end >> 10));

  std::string failures;
  for (const auto& failure : tally.failures) failures += "\n  " + failure;
  cr_expect(tally.failures.empty(), "failures:%s", failures.c_str());
  cr_expect_gt(tally.replies.load(), static_cast<uint64_t>(kClients) * 10, "too few replies to mean anything");
  cr_expect_lt(end, warm + kFlatBytes, "the vmm grew from %lu to %lu KiB", static_cast<unsigned long>(warm >> 10),
               static_cast<unsigned long>(end >> 10));

  // The endpoint still serves, and the VM still runs.
  auto client = qmp::QmpClient::connect(testing::unix_socket(guest->vm.qmp_endpoint), 10s);
  cr_assert(client.has_value());
  auto status = (*client)->execute("query-status");
  cr_assert(status.has_value(), "%s", status ? "" : status.error().to_string().c_str());
  cr_expect_eq((*status)["status"], "running");
}
