// QmpClient against a scripted server: replies in pieces and in bunches,
// events between replies, stale replies, timeouts, error classes, a server
// that hangs up or is not QMP at all.
#include <criterion/criterion.h>

#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/qmp/qmp_client.h>

using namespace vmpod;
using namespace vmpod::qmp;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

const std::string kGreeting =
    R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})"
    "\r\n";

// Accepts one client on a unix socket and runs a script against it.
class ScriptedServer {
 public:
  using Script = std::function<void(ScriptedServer&)>;

  explicit ScriptedServer(Script script) {
    char pattern[] = "/tmp/vmpod-qmp-client-XXXXXX";
    cr_assert(::mkdtemp(pattern) != nullptr);
    dir_ = pattern;
    address.kind = net::SocketAddress::Kind::kUnix;
    address.path = dir_ + "/qmp.sock";
    auto listening = net::listen_socket(address);
    cr_assert(listening.has_value());
    listen_fd_ = std::move(*listening);
    thread_ = std::thread([this, script = std::move(script)] {
      fd_ = net::Fd(::accept(listen_fd_.get(), nullptr, nullptr));
      if (fd_) script(*this);
    });
  }
  ~ScriptedServer() {
    thread_.join();
    std::filesystem::remove_all(dir_);
  }

  void write(const std::string& bytes) {
    (void)!::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }
  // One byte per send, so the client sees every split.
  void trickle(const std::string& bytes) {
    for (char c : bytes) {
      write(std::string(1, c));
      std::this_thread::sleep_for(50us);
    }
  }
  json read_request() {
    while (pending_.empty()) {
      char buffer[4096];
      ssize_t got = ::recv(fd_.get(), buffer, sizeof(buffer), 0);
      if (got <= 0) return nullptr;
      streamer_.feed(std::string_view(buffer, static_cast<size_t>(got)), pending_);
    }
    json request = std::get<json>(pending_.front());
    pending_.erase(pending_.begin());
    return request;
  }
  void close() { fd_.reset(); }

  net::SocketAddress address;

 private:
  std::string dir_;
  net::Fd listen_fd_;
  net::Fd fd_;
  JsonStreamer streamer_;
  std::vector<JsonInput> pending_;
  std::thread thread_;
};

std::string reply(const json& request, const json& value) {
  return json({{"return", value}, {"id", request["id"]}}).dump() + "\r\n";
}

std::string event(const std::string& name) {
  return json({{"event", name}, {"timestamp", {{"seconds", 1}, {"microseconds", 2}}}}).dump() + "\r\n";
}

}  // namespace

Test(qmp_client, partial_reads_bunched_replies_and_events) {
  ScriptedServer server([](ScriptedServer& s) {
    s.trickle(kGreeting);
    json negotiate = s.read_request();
    cr_expect(negotiate["execute"] == "qmp_capabilities");
    cr_expect(negotiate["arguments"] == json({{"enable", {"oob"}}}));
    s.trickle(event("EARLY") + reply(negotiate, json::object()));
    json request = s.read_request();
    cr_expect(request["execute"] == "query-status" && request["arguments"] == json({{"x", 1}}));
    // A stale reply, an event and the real reply in one write.
    s.write(json({{"return", 0}, {"id", 999}}).dump() + event("MIDDLE") + reply(request, {{"status", "running"}}));
    s.read_request();
  });
  auto client = QmpClient::connect(server.address, 2s, true);
  cr_assert(client.has_value(), "%s", client ? "" : client.error().message().c_str());
  cr_expect((*client)->greeting()["QMP"]["version"]["qemu"]["micro"] == 22);
  auto status = (*client)->execute("query-status", {{"x", 1}});
  cr_assert(status.has_value(), "%s", status ? "" : status.error().message().c_str());
  cr_expect(*status == json({{"status", "running"}}));
  cr_expect((*(*client)->next_event(0ms))["event"] == "EARLY");
  cr_expect((*(*client)->next_event(0ms))["event"] == "MIDDLE");
  cr_expect(!(*client)->next_event(0ms).has_value());
  (void)(*client)->send_raw("{}");
}

Test(qmp_client, error_classes_become_error_codes) {
  ScriptedServer server([](ScriptedServer& s) {
    s.write(kGreeting);
    s.write(reply(s.read_request(), json::object()));
    for (const char* error_class : {"CommandNotFound", "DeviceNotFound", "DeviceNotActive", "GenericError", "KVMMissingCap"}) {
      json request = s.read_request();
      s.write(json({{"error", {{"class", error_class}, {"desc", "why"}}}, {"id", request["id"]}}).dump());
    }
  });
  auto client = QmpClient::connect(server.address, 2s);
  cr_assert(client.has_value());
  const std::vector<std::pair<const char*, ErrorCode>> expected = {
      {"CommandNotFound", ErrorCode::kNotFound},       {"DeviceNotFound", ErrorCode::kNotFound},
      {"DeviceNotActive", ErrorCode::kWrongState},     {"GenericError", ErrorCode::kInvalidArgument},
      {"KVMMissingCap", ErrorCode::kInvalidArgument}};
  for (const auto& [error_class, code] : expected) {
    auto result = (*client)->execute("cmd");
    cr_assert(!result.has_value());
    cr_expect(result.error().code() == code, "%s", error_class);
    cr_expect(result.error().message() == std::string("cmd: ") + error_class + ": why", "%s",
              result.error().message().c_str());
  }
}

Test(qmp_client, a_late_reply_is_not_taken_for_the_next_commands) {
  ScriptedServer server([](ScriptedServer& s) {
    s.write(kGreeting);
    s.write(reply(s.read_request(), json::object()));
    json slow = s.read_request();
    json next = s.read_request();
    s.write(reply(slow, "slow") + reply(next, "next"));
    s.read_request();
  });
  auto client = QmpClient::connect(server.address, 2s);
  cr_assert(client.has_value());
  auto started = std::chrono::steady_clock::now();
  auto timed_out = (*client)->execute("slow", json::object(), 100ms);
  cr_assert(!timed_out.has_value());
  cr_expect(timed_out.error().code() == ErrorCode::kUnavailable);
  cr_expect(std::chrono::steady_clock::now() - started < 1s);
  auto next = (*client)->execute("next");
  cr_assert(next.has_value(), "%s", next ? "" : next.error().message().c_str());
  cr_expect(*next == "next");
  (void)(*client)->send_raw("{}");
}

Test(qmp_client, server_hangs_up) {
  ScriptedServer server([](ScriptedServer& s) {
    s.write(kGreeting);
    s.write(reply(s.read_request(), json::object()));
    s.read_request();
    s.close();
  });
  auto client = QmpClient::connect(server.address, 2s);
  cr_assert(client.has_value());
  auto result = (*client)->execute("anything");
  cr_assert(!result.has_value());
  cr_expect(result.error().code() == ErrorCode::kUnavailable);
  auto again = (*client)->execute("anything", json::object(), 5s);
  cr_expect(!again.has_value() && again.error().message().find("connection closed") != std::string::npos);
}

Test(qmp_client, refuses_what_is_not_qmp) {
  {
    ScriptedServer server([](ScriptedServer& s) { s.write(R"({"hello": 1})" "\n"); });
    auto client = QmpClient::connect(server.address, 2s);
    cr_expect(!client.has_value() && client.error().code() == ErrorCode::kUnavailable);
  }
  {
    ScriptedServer server([](ScriptedServer& s) {
      s.write(R"({"QMP": {"version": {}, "capabilities": []}})" "\n");
    });
    auto client = QmpClient::connect(server.address, 2s, true);
    cr_expect(!client.has_value() && client.error().code() == ErrorCode::kInvalidArgument);
  }
  {
    ScriptedServer server([](ScriptedServer& s) {
      s.write(kGreeting);
      s.read_request();
      s.write("{\"return\": @}\n");
    });
    auto client = QmpClient::connect(server.address, 2s);
    cr_assert(!client.has_value());
    cr_expect(client.error().message().find("malformed output from the server") != std::string::npos, "%s",
              client.error().message().c_str());
  }
}
