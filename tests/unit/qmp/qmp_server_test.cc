// QmpServer over unix sockets with a test dispatcher: what clients see
// (greeting, replies, errors, events), ordering under an asynchronous
// dispatcher, exec-oob, many clients at once, and clients that misbehave:
// never read, vanish mid-command, send garbage or too much.
#include <criterion/criterion.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/qmp/qmp_client.h>
#include <vmpod/qmp/qmp_server.h>

using namespace vmpod;
using namespace vmpod::qmp;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const Greeting kGreeting{7, 2, 22, "Debian 1:7.2+dfsg-7+deb12u18+b3 vmpod 0.1.0"};

struct TempDir {
  TempDir() {
    char pattern[] = "/tmp/vmpod-qmp-test-XXXXXX";
    cr_assert(::mkdtemp(pattern) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

// Runs functions after a delay on its own thread, so completions arrive
// from another thread and out of order.
class Delayer {
 public:
  Delayer() : thread_([this] { run(); }) {}
  ~Delayer() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void after(std::chrono::microseconds delay, std::function<void()> work) {
    {
      std::lock_guard lock(mutex_);
      work_.emplace(std::chrono::steady_clock::now() + delay, std::move(work));
    }
    wake_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (work_.empty()) {
        wake_.wait(lock);
        continue;
      }
      auto first = work_.begin();
      if (first->first > std::chrono::steady_clock::now()) {
        wake_.wait_until(lock, first->first);
        continue;
      }
      auto work = std::move(first->second);
      work_.erase(first);
      lock.unlock();
      work();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> work_;
  bool stopping_ = false;
  std::thread thread_;
};

// echo / async / sleep / fail / drop / big / hold / whoami; checks that no client
// ever has two in-band commands with it at once.
class TestDispatcher : public Dispatcher {
 public:
  void dispatch(const Request& request, Completion done) override {
    const uint64_t client = request.client_id;
    {
      std::lock_guard lock(mutex_);
      if (!request.oob && ++in_band_[client] > 1) ++overlapping_in_band;
    }
    // Called just before done(): the server may dispatch the next command
    // as soon as done() has posted.
    auto finish = [this, client, oob = request.oob] {
      if (oob) return;
      std::lock_guard lock(mutex_);
      --in_band_[client];
    };
    const std::string& command = request.command;
    json echo = {{"arguments", request.arguments}, {"oob", request.oob}};
    if (command == "echo") {
      finish();
      done(echo);
    } else if (command == "async") {
      thread_local std::minstd_rand random(static_cast<unsigned>(client));
      delayer_.after(std::chrono::microseconds(random() % 2000), [finish, done, echo] {
        finish();
        done(echo);
      });
    } else if (command == "sleep") {
      delayer_.after(std::chrono::milliseconds(request.arguments.value("ms", 0)), [finish, done, echo] {
        finish();
        done(echo);
      });
    } else if (command == "fail") {
      finish();
      done(qmp_fail(ErrorClass::kDeviceNotFound, "Device 'x' not found"));
    } else if (command == "drop") {
      finish();
    } else if (command == "big") {
      finish();
      done(json{{"data", std::string(request.arguments.value("size", 0), 'b')}});
    } else if (command == "hold") {
      std::lock_guard lock(mutex_);
      held_.push_back([finish, done] {
        finish();
        done(json::object());
      });
    } else if (command == "whoami") {
      finish();
      done(json{{"client", client}});
    } else {
      finish();
      done(qmp_fail(ErrorClass::kCommandNotFound, "The command " + command + " has not been found"));
    }
  }

  void disconnected(uint64_t client_id) override {
    std::lock_guard lock(mutex_);
    gone_.insert(client_id);
  }

  bool is_gone(uint64_t client_id) {
    std::lock_guard lock(mutex_);
    return gone_.count(client_id) > 0;
  }

  // Completes every "hold" command so far.
  void release() {
    std::vector<std::function<void()>> held;
    {
      std::lock_guard lock(mutex_);
      held.swap(held_);
    }
    for (auto& complete : held) complete();
  }

  size_t gone_count() {
    std::lock_guard lock(mutex_);
    return gone_.size();
  }

  std::atomic<int> overlapping_in_band{0};

 private:
  std::mutex mutex_;
  std::set<uint64_t> gone_;
  std::vector<std::function<void()>> held_;
  std::map<uint64_t, int> in_band_;
  Delayer delayer_;  // last: joined first, while the rest is still alive
};

// A server on a fresh unix socket, destroyed before its dispatcher.
struct Fixture {
  explicit Fixture(ServerOptions options = {}) {
    address.kind = net::SocketAddress::Kind::kUnix;
    address.path = dir.path + "/qmp.sock";
    auto started = QmpServer::start(address, kGreeting, dispatcher, options);
    cr_assert(started.has_value(), "start: %s", started ? "" : started.error().message().c_str());
    server = std::move(*started);
  }

  std::unique_ptr<QmpClient> connect(bool oob = false) {
    auto client = QmpClient::connect(address, 2s, oob);
    cr_assert(client.has_value(), "connect: %s", client ? "" : client.error().message().c_str());
    return std::move(*client);
  }

  uint64_t client_id(QmpClient& client) {
    auto who = client.execute("whoami");
    cr_assert(who.has_value());
    return (*who)["client"].get<uint64_t>();
  }

  TempDir dir;
  TestDispatcher dispatcher;
  net::SocketAddress address;
  std::unique_ptr<QmpServer> server;
};

json must(Result<json> result, const char* what) {
  cr_assert(result.has_value(), "%s: %s", what, result ? "" : result.error().message().c_str());
  return std::move(*result);
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit = 5s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

// A connection that speaks bytes only, for clients that misbehave.
net::Fd raw_connect(const net::SocketAddress& address) {
  auto fd = net::connect_socket(address, 2s);
  cr_assert(fd.has_value());
  return std::move(*fd);
}

// What a raw connection reads within the timeout; "" at EOF.
std::string raw_read(int fd, std::chrono::milliseconds timeout) {
  pollfd entry{fd, POLLIN, 0};
  if (::poll(&entry, 1, static_cast<int>(timeout.count())) <= 0) return "<timeout>";
  char buffer[4096];
  ssize_t got = ::recv(fd, buffer, sizeof(buffer), 0);
  return got <= 0 ? "" : std::string(buffer, static_cast<size_t>(got));
}

}  // namespace

Test(qmp_server, greeting_negotiation_and_commands) {
  Fixture f;
  auto client = f.connect();
  cr_expect(client->greeting() ==
            json({{"QMP",
                   {{"version", {{"qemu", {{"major", 7}, {"minor", 2}, {"micro", 22}}}, {"package", kGreeting.package}}},
                    {"capabilities", {"oob"}}}}}));
  auto reply = must(client->execute("echo", {{"x", 1}}), "echo");
  cr_expect(reply == json({{"arguments", {{"x", 1}}}, {"oob", false}}));

  // The QEMU behind changed: new clients see it, connected ones keep theirs.
  f.server->set_greeting(Greeting{8, 0, 0, "new"});
  auto later = f.connect();
  cr_expect(later->greeting()["QMP"]["version"]["package"] == "new");
  cr_expect(later->greeting()["QMP"]["version"]["qemu"]["major"] == 8);
}

Test(qmp_server, ids_and_error_shapes) {
  Fixture f;
  auto client = f.connect();
  for (const json& id : {json(7), json(-1.5), json("text"), json({{"a", {1, 2}}}), json(nullptr)}) {
    auto reply = must(client->execute_raw({{"execute", "echo"}, {"id", id}}), "echo");
    cr_expect(reply.contains("id") && reply["id"] == id, "id %s", id.dump().c_str());
    cr_expect(reply.contains("return"));
  }
  auto no_id = must(client->execute_raw({{"execute", "echo"}}), "echo");
  cr_expect(!no_id.contains("id"));

  auto failed = must(client->execute_raw({{"execute", "fail"}, {"id", 3}}), "fail");
  cr_expect(failed == json({{"id", 3}, {"error", {{"class", "DeviceNotFound"}, {"desc", "Device 'x' not found"}}}}));
  auto as_error = client->execute("fail");
  cr_assert(!as_error.has_value());
  cr_expect(as_error.error().code() == ErrorCode::kNotFound);
  cr_expect(as_error.error().message() == "fail: DeviceNotFound: Device 'x' not found", "%s",
            as_error.error().message().c_str());
  auto missing = client->execute("nope");
  cr_assert(!missing.has_value());
  cr_expect(missing.error().message() == "nope: CommandNotFound: The command nope has not been found");

  // A dispatcher that loses the completion does not leave the client hanging.
  auto dropped = must(client->execute_raw({{"execute", "drop"}, {"id", 4}}), "drop");
  cr_expect(dropped == json({{"id", 4},
                             {"error", {{"class", "GenericError"}, {"desc", "Command 'drop' ended without a reply"}}}}));
  must(client->execute("echo"), "echo after drop");
}

Test(qmp_server, events_with_timestamps) {
  Fixture f;
  auto a = f.connect();
  auto b = f.connect();
  const uint64_t a_id = f.client_id(*a);
  f.server->emit_event("STOP");
  f.server->emit_event("RESET", {{"guest", false}, {"reason", "host-qmp-system-reset"}});
  const auto now_seconds = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count();
  for (auto* client : {a.get(), b.get()}) {
    auto stop = must(client->next_event(2s), "STOP");
    cr_expect(stop["event"] == "STOP");
    cr_expect(!stop.contains("data"), "an event without members has no data, as in QEMU");
    cr_expect(stop.size() == 2u);
    const auto& timestamp = stop["timestamp"];
    cr_expect(timestamp.size() == 2u);
    cr_expect(std::abs(timestamp["seconds"].get<int64_t>() - now_seconds) <= 5);
    cr_expect(timestamp["microseconds"].get<int64_t>() >= 0 && timestamp["microseconds"].get<int64_t>() < 1000000);
    auto reset = must(client->next_event(2s), "RESET");
    cr_expect(reset["data"] == json({{"guest", false}, {"reason", "host-qmp-system-reset"}}));
  }
  f.server->send_event_to(a_id, "ONLY_A", {{"n", 1}});
  cr_expect(must(a->next_event(2s), "ONLY_A")["event"] == "ONLY_A");
  cr_expect(!b->next_event(200ms).has_value(), "b got a's event");

  // Events that arrive while a command runs are kept for next_event().
  f.server->emit_event("DURING");
  must(a->execute("sleep", {{"ms", 50}}), "sleep");
  cr_expect(must(a->next_event(1s), "DURING")["event"] == "DURING");
}

Test(qmp_server, in_band_order_under_an_asynchronous_dispatcher) {
  Fixture f;
  constexpr int kClients = 8;
  constexpr int kCommands = 100;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client = QmpClient::connect(f.address, 2s);
      if (!client) return (void)++bad;
      std::string batch;
      for (int i = 0; i < kCommands; ++i) {
        batch += json({{"execute", "async"}, {"arguments", {{"i", i}}}, {"id", i}}).dump();
      }
      if (!(*client)->send_raw(batch)) return (void)++bad;
      for (int i = 0; i < kCommands; ++i) {
        auto reply = (*client)->read_reply(5s);
        if (!reply || (*reply)["id"] != i || (*reply)["return"]["arguments"]["i"] != i) ++bad;
      }
      (void)c;
    });
  }
  for (auto& thread : threads) thread.join();
  cr_expect_eq(bad.load(), 0);
  cr_expect_eq(f.dispatcher.overlapping_in_band.load(), 0, "two in-band commands of one client at once");
}

Test(qmp_server, exec_oob_overtakes_a_running_command) {
  Fixture f;
  auto client = f.connect(true);
  must(client->execute("echo"), "echo");
  cr_assert(client->send_raw(json({{"execute", "sleep"}, {"arguments", {{"ms", 300}}}, {"id", "slow"}}).dump() +
                             json({{"exec-oob", "echo"}, {"id", "fast"}}).dump()));
  auto first = must(client->read_reply(2s), "first");
  auto second = must(client->read_reply(2s), "second");
  cr_expect(first["id"] == "fast" && first["return"]["oob"] == true, "%s", first.dump().c_str());
  cr_expect(second["id"] == "slow" && second["return"]["oob"] == false, "%s", second.dump().c_str());

  // Without oob negotiated, exec-oob is QEMU's error.
  auto plain = f.connect(false);
  auto refused = must(plain->execute_raw({{"exec-oob", "echo"}, {"id", 1}}), "exec-oob");
  cr_expect(refused == json({{"id", 1},
                             {"error", {{"class", "GenericError"}, {"desc", "QMP input member 'exec-oob' is unexpected"}}}}));
}

Test(qmp_server, many_clients_many_commands) {
  Fixture f;
  constexpr int kClients = 64;
  constexpr int kCommands = 200;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  std::atomic<int> answered{0};
  auto start = std::chrono::steady_clock::now();
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client = QmpClient::connect(f.address, 5s);
      if (!client) return (void)++bad;
      std::string batch;
      for (int i = 0; i < kCommands; ++i) {
        std::string id = std::to_string(c) + "-" + std::to_string(i);
        batch += json({{"execute", i % 2 ? "async" : "echo"}, {"arguments", {{"id", id}}}, {"id", id}}).dump() + "\n";
      }
      if (!(*client)->send_raw(batch)) return (void)++bad;
      for (int i = 0; i < kCommands; ++i) {
        auto reply = (*client)->read_reply(10s);
        std::string id = std::to_string(c) + "-" + std::to_string(i);
        if (!reply || (*reply)["id"] != id || (*reply)["return"]["arguments"]["id"] != id) {
          ++bad;
          return;
        }
        ++answered;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  cr_expect_eq(bad.load(), 0);
  cr_expect_eq(answered.load(), kClients * kCommands);
  cr_expect_eq(f.dispatcher.overlapping_in_band.load(), 0);
  cr_log_info("%d clients x %d commands in %lld ms", kClients, kCommands, static_cast<long long>(elapsed.count()));
}

Test(qmp_server, a_client_that_never_reads_is_dropped_alone) {
  ServerOptions options;
  options.max_output_bytes = 64 * 1024;
  Fixture f(options);
  auto healthy = f.connect();
  const uint64_t healthy_id = f.client_id(*healthy);

  net::Fd stuck = raw_connect(f.address);
  std::string commands = R"({"execute":"qmp_capabilities"})";
  for (int i = 0; i < 200; ++i) commands += R"({"execute":"big","arguments":{"size":32768}})";
  cr_assert_eq(::send(stuck.get(), commands.data(), commands.size(), MSG_NOSIGNAL),
               static_cast<ssize_t>(commands.size()));
  // The others are served meanwhile.
  for (int i = 0; i < 50; ++i) must(healthy->execute("echo", {{"i", i}}, 1s), "healthy echo");
  cr_assert(eventually([&] { return f.dispatcher.gone_count() == 1; }), "the stuck client was not dropped");
  cr_expect(!f.dispatcher.is_gone(healthy_id));
  cr_expect_eq(f.server->client_count(), 1u);
  must(healthy->execute("echo"), "echo after the drop");
}

Test(qmp_server, a_client_that_leaves_mid_command) {
  Fixture f;
  {
    auto leaving = f.connect();
    cr_assert(leaving->send_raw(R"({"execute":"sleep","arguments":{"ms":150},"id":1})"));
  }
  cr_assert(eventually([&] { return f.dispatcher.gone_count() == 1; }));
  std::this_thread::sleep_for(300ms);  // the completion arrives for nobody
  auto next = f.connect();
  must(next->execute("sleep", {{"ms", 10}}), "sleep");
  cr_expect_eq(f.server->client_count(), 1u);
}

Test(qmp_server, malformed_input_is_answered_and_the_connection_kept) {
  Fixture f;
  auto client = f.connect();
  auto other = f.connect();
  cr_assert(client->send_raw("{bad json}\n"));
  cr_expect(must(client->read_reply(2s), "parse error") ==
            json({{"error", {{"class", "GenericError"}, {"desc", "JSON parse error, invalid keyword 'bad'"}}}}));
  must(client->execute("echo"), "after bad json");

  std::string line = R"({"execute":"echo","id":")" + std::string(4 << 20, 'x') + "\"}\n";
  cr_assert(client->send_raw(line));
  cr_expect(must(client->read_reply(5s), "oversize") ==
            json({{"error", {{"class", "GenericError"}, {"desc", "JSON token size limit exceeded"}}}}));
  must(client->execute("echo"), "after 4 MiB");

  std::minstd_rand random(7);
  std::string garbage;
  for (int i = 0; i < 64 * 1024; ++i) garbage += static_cast<char>(random());
  cr_assert(client->send_raw(garbage + "\xff"));
  must(other->execute("echo"), "another client during garbage");
  // execute() matches its id, skipping the errors the garbage earned.
  must(client->execute("echo", json::object(), 5s), "after garbage");
  cr_expect_eq(f.server->client_count(), 2u);
}

Test(qmp_server, client_limit_refuses_with_a_closed_socket) {
  ServerOptions options;
  options.max_clients = 4;
  Fixture f(options);
  std::vector<std::unique_ptr<QmpClient>> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(f.connect());
  net::Fd refused = raw_connect(f.address);
  cr_expect(raw_read(refused.get(), 2s) == "", "the fifth client got a greeting");
  clients.pop_back();
  cr_assert(eventually([&] { return f.server->client_count() == 3; }));
  must(f.connect()->execute("echo"), "a client once there is room");
}

Test(qmp_server, stop_closes_clients_and_removes_the_socket) {
  Fixture f;
  auto client = f.connect();
  cr_assert(std::filesystem::exists(f.address.path));
  f.server->stop();
  cr_expect(!std::filesystem::exists(f.address.path));
  auto after = client->execute("echo", json::object(), 1s);
  cr_assert(!after.has_value());
  cr_expect(after.error().code() == ErrorCode::kUnavailable);
  cr_expect(f.dispatcher.gone_count() == 1u);
  f.server->stop();  // idempotent
}

Test(qmp_server, tcp_loopback) {
  TestDispatcher dispatcher;
  auto address = net::parse_socket_address("tcp:127.0.0.1:0");
  cr_assert(address.has_value());
  auto server = QmpServer::start(*address, kGreeting, dispatcher);
  cr_assert(server.has_value(), "%s", server ? "" : server.error().message().c_str());
  cr_assert_neq((*server)->address().port, 0);
  auto client = QmpClient::connect((*server)->address(), 2s);
  cr_assert(client.has_value());
  must((*client)->execute("echo"), "echo over tcp");
  server->reset();
}

Test(qmp_server, a_busy_client_is_not_read_until_its_queue_drains) {
  ServerOptions options;
  options.max_queued_commands = 1;
  Fixture f(options);
  auto client = f.connect();
  cr_assert(client->send_raw(R"({"execute":"hold","id":"held"})"));
  // Its queue is full, so the server reads no more: the socket buffers fill
  // and sending stalls (whitespace, so that nothing else queues).
  const std::string filler(4 << 20, ' ');
  auto stalled = client->send_raw(filler, 300ms);
  cr_expect(!stalled.has_value(), "the server kept reading a client with a full queue");
  auto other = f.connect();
  must(other->execute("echo"), "another client meanwhile");
  f.dispatcher.release();
  cr_expect(must(client->read_reply(2s), "held")["id"] == "held");
}
