// The same bytes to a real qemu-system-x86_64 7.2 and to a QmpServer whose
// dispatcher forwards commands to that QEMU: every reply must be the same
// text, byte for byte, whether the server made it (negotiation, request
// checks, JSON errors) or QEMU did (forwarded commands). Only replies whose
// members share a QDict bucket (query-status) are compared as JSON.
#include <criterion/criterion.h>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/base/subprocess.h>
#include <vmpod/qmp/qmp_client.h>
#include <vmpod/qmp/qmp_server.h>

using namespace vmpod;
using namespace vmpod::qmp;
using namespace std::chrono_literals;
using namespace std::string_literals;
using nlohmann::json;

namespace {

// A failed assertion skips destructors: the suite's fini kills QEMU by pid.
// A crash skips fini too: QEMU runs under setpriv --pdeathsig, so the kernel
// kills it when the test process dies.
pid_t g_qemu_pid = -1;
std::string g_dir;

void setup() {
  char pattern[] = "/tmp/vmpod-qmp-qemu-XXXXXX";
  cr_assert(::mkdtemp(pattern) != nullptr);
  g_dir = pattern;
}

void teardown() {
  if (g_qemu_pid > 0) {
    ::kill(g_qemu_pid, SIGKILL);
    ::waitpid(g_qemu_pid, nullptr, 0);
    g_qemu_pid = -1;
  }
  std::filesystem::remove_all(g_dir);
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (::access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

net::SocketAddress unix_address(const std::string& path) {
  net::SocketAddress address;
  address.kind = net::SocketAddress::Kind::kUnix;
  address.path = path;
  return address;
}

net::Fd connect_when_ready(const net::SocketAddress& address) {
  for (int attempt = 0; attempt < 400; ++attempt) {
    if (auto fd = net::connect_socket(address, 1s)) return std::move(*fd);
    std::this_thread::sleep_for(10ms);
  }
  cr_assert_fail("cannot connect to %s", address.path.c_str());
  return {};
}

// Reads until the output holds text ending in "\r\n".
std::string read_line(int fd) {
  std::string out;
  while (!out.ends_with("\r\n")) {
    pollfd entry{fd, POLLIN, 0};
    cr_assert(::poll(&entry, 1, 5000) == 1, "no line after %s", out.c_str());
    char buffer[4096];
    ssize_t got = ::recv(fd, buffer, sizeof(buffer), 0);
    cr_assert(got > 0, "connection closed after %s", out.c_str());
    out.append(buffer, static_cast<size_t>(got));
  }
  return out;
}

// The replies input earns: sends input and then a marker whose reply both
// sides make alike, and returns what came before the marker's reply.
std::string exchange(int fd, const std::string& input) {
  static const std::string kMarker = R"({"execute":"marker-nope","id":"MARK"})";
  std::string bytes = input + kMarker;
  cr_assert(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
  std::string out;
  for (;;) {
    out += read_line(fd);
    size_t marker = out.find(R"("id": "MARK")");
    if (marker == std::string::npos) continue;
    size_t previous_line_end = out.rfind("\r\n", marker);
    return out.substr(0, previous_line_end == std::string::npos ? 0 : previous_line_end + 2);
  }
}

// Forwards each command to QEMU as it came and hands back QEMU's answer.
class ForwardingDispatcher : public Dispatcher {
 public:
  explicit ForwardingDispatcher(QmpClient& qemu) : qemu_(qemu) {}

  void dispatch(const Request& request, Completion done) override {
    json forwarded = {{request.oob ? "exec-oob" : "execute", request.command}};
    if (!request.arguments.empty()) forwarded["arguments"] = request.arguments;
    auto reply = qemu_.execute_raw(forwarded, 5s);
    if (!reply) return done(qmp_fail(ErrorClass::kGenericError, reply.error().message()));
    if (reply->contains("return")) return done((*reply)["return"]);
    const json& error = (*reply)["error"];
    done(qmp_fail(parse_error_class(error.value("class", "")).value_or(ErrorClass::kGenericError),
                  error.value("desc", "")));
  }

 private:
  QmpClient& qemu_;
};

// kLinesAnyOrder for an exec-oob reply, free to overtake or not.
enum class Compare { kBytes, kJson, kLinesAnyOrder };

std::vector<std::string> sorted_lines(const std::string& text) {
  std::vector<std::string> lines;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find("\r\n", at);
    lines.push_back(text.substr(at, end - at));
    at = end + 2;
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

std::vector<json> parse_lines(const std::string& text) {
  JsonStreamer streamer;
  std::vector<JsonInput> inputs;
  streamer.feed(text, inputs);
  std::vector<json> values;
  for (auto& input : inputs) values.push_back(std::get<json>(input));
  return values;
}

void compare_replies(int qemu_fd, int vmpod_fd, const std::vector<std::pair<std::string, Compare>>& inputs) {
  for (const auto& [input, compare] : inputs) {
    std::string from_qemu = exchange(qemu_fd, input);
    std::string from_vmpod = exchange(vmpod_fd, input);
    const std::string shown = json(input).dump(-1, ' ', false, json::error_handler_t::replace);
    if (compare == Compare::kBytes) {
      cr_expect(from_vmpod == from_qemu, "input %s\n qemu  %s vmpod %s", shown.c_str(), from_qemu.c_str(),
                from_vmpod.c_str());
    } else if (compare == Compare::kLinesAnyOrder) {
      cr_expect(sorted_lines(from_vmpod) == sorted_lines(from_qemu), "input %s\n qemu  %s vmpod %s", shown.c_str(),
                from_qemu.c_str(), from_vmpod.c_str());
    } else {
      cr_expect(parse_lines(from_vmpod) == parse_lines(from_qemu), "input %s\n qemu  %s vmpod %s", shown.c_str(),
                from_qemu.c_str(), from_vmpod.c_str());
    }
  }
}

}  // namespace

TestSuite(qemu_differential, .init = setup, .fini = teardown, .timeout = 60);

Test(qemu_differential, replies_match_qemu) {
  if (!on_path("qemu-system-x86_64") || !on_path("setpriv")) {
    cr_skip_test("qemu-system-x86_64 or setpriv is not installed");
  }
  const std::string direct_path = g_dir + "/direct.sock";
  const std::string direct_oob_path = g_dir + "/direct-oob.sock";
  const std::string forward_path = g_dir + "/forward.sock";
  auto qemu = Subprocess::spawn({"setpriv", "--pdeathsig", "KILL", "qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none",
                                 "-qmp", "unix:" + direct_path + ",server=on,wait=off",
                                 "-qmp", "unix:" + direct_oob_path + ",server=on,wait=off",
                                 "-qmp", "unix:" + forward_path + ",server=on,wait=off"},
                                g_dir + "/qemu.log");
  cr_assert(qemu.has_value(), "%s", qemu ? "" : qemu.error().message().c_str());
  g_qemu_pid = qemu->pid();

  net::Fd direct = connect_when_ready(unix_address(direct_path));
  const std::string qemu_greeting = read_line(direct.get());
  connect_when_ready(unix_address(forward_path)).reset();  // QEMU is up; a fresh connection follows
  // With oob, so that exec-oob can be forwarded as it came.
  auto forwarder = QmpClient::connect(unix_address(forward_path), 5s, true);
  cr_assert(forwarder.has_value(), "%s", forwarder ? "" : forwarder.error().message().c_str());

  // vmpod's greeting is QEMU's with " vmpod X" after the package.
  const json& version = (*forwarder)->greeting()["QMP"]["version"];
  const std::string package = version["package"].get<std::string>();
  Greeting greeting{version["qemu"]["major"], version["qemu"]["minor"], version["qemu"]["micro"],
                    package + " vmpod 0.1.0"};
  ForwardingDispatcher dispatcher(**forwarder);
  auto server = QmpServer::start(unix_address(g_dir + "/vmpod.sock"), greeting, dispatcher);
  cr_assert(server.has_value(), "%s", server ? "" : server.error().message().c_str());
  net::Fd ours = connect_when_ready((*server)->address());
  std::string expected_greeting = qemu_greeting;
  expected_greeting.replace(expected_greeting.find(package), package.size(), greeting.package);
  cr_expect(read_line(ours.get()) == expected_greeting, "greeting differs from QEMU's %s", qemu_greeting.c_str());

  const std::vector<std::pair<std::string, Compare>> inputs = {
      // Before negotiation.
      {R"({"execute":"query-version","id":5})", Compare::kBytes},
      {R"({"execute":"query-version"})", Compare::kBytes},
      {R"({"exec-oob":"query-status","id":1})", Compare::kBytes},
      {R"({"execute":"query-status","x":1})", Compare::kBytes},
      {R"({"execute":"qmp_capabilities","arguments":{"enable":"oob"}})", Compare::kBytes},
      {R"({"execute":"qmp_capabilities","arguments":{"enable":[1]}})", Compare::kBytes},
      {R"({"execute":"qmp_capabilities","arguments":{"enable":["foo"]}})", Compare::kBytes},
      {R"({"execute":"qmp_capabilities","arguments":{"x":1}})", Compare::kBytes},
      {"{bad json}\n", Compare::kBytes},
      {R"({"execute":"qmp_capabilities","id":"negotiate"})", Compare::kBytes},
      // After: the server's own checks and QEMU's answers through it.
      {R"({"execute":"qmp_capabilities"})", Compare::kBytes},
      {R"({"execute":"query-version","id":{"a":[1,"\u00e9"]}})", Compare::kBytes},
      {R"({"execute":"query-status","id":1.5})", Compare::kJson},
      {R"({"execute":"nope","id":1})", Compare::kBytes},
      {R"({"execute":"query-status","arguments":[]})", Compare::kBytes},
      {R"({"execute":"query-status","arguments":null})", Compare::kBytes},
      {R"({"execute":"query-status","arguments":{"x":1}})", Compare::kBytes},
      {R"({"execute":"query-status","arguments":{"a":1,"b":2,"c":3}})", Compare::kBytes},
      {R"({"execute":"device_del","arguments":{"id":"nope"},"id":"d"})", Compare::kBytes},
      {R"({"execute":"human-monitor-command","arguments":{}})", Compare::kBytes},
      {R"({"execute":"human-monitor-command","arguments":{"command-line":5}})", Compare::kBytes},
      {R"({"exec-oob":"query-status","id":1})", Compare::kBytes},
      {R"({"execute":"a","exec-oob":"b"})", Compare::kBytes},
      {R"({"execute":"query-status","exec-oob":"b","arguments":[]})", Compare::kBytes},
      {R"({"execute":"q","argumentz":{},"id":1,"foo":2,"bar":3,"zzz":4})", Compare::kBytes},
      {R"({"foo":1}{"execute":1}{"id":3}[1,2] "str" 42)" "\n", Compare::kBytes},
      {"{'execute':'query-version','id':'it\\'s'}", Compare::kBytes},
      {R"({"execute":"query-version","id":"\u0000\ud83d\ude00\/"})", Compare::kBytes},
      {"{\"execute\":\"query-version\",\"id\":\"\xc0\x80\"}", Compare::kBytes},
      {R"({"execute":"query-version","id":12345678901234567890})", Compare::kBytes},
      {R"({"execute":"query-version","id":[-0, 0.1, 1e300, -0.0]})", Compare::kBytes},
      // JSON errors.
      {R"({"a":1}})", Compare::kBytes},
      {"}\n]\n[1,]\n[,1]\n{,}\n{\"a\":}\n", Compare::kBytes},
      {R"({1:2}{true:1}{{"a":1}:2}{{"a" 1}:2})", Compare::kBytes},
      {R"({"a" 1 2}{"a":1 "b"}[1 2][1a][{]})", Compare::kBytes},
      {R"({"a":1,"a":2,}{"execute":"x","id":1,"id":2})", Compare::kBytes},
      {"nul\nnullx\nabc@\nTrue\n@\x01\x01@@@\x01{}", Compare::kBytes},
      {" \x00 \xff\xc3\xa9{}1\xff"s + "true\xc3\xa9\n", Compare::kBytes},
      {"01\n-01\n-\n[-]1.\n1e\n1e+\n1.5.\n0e5\n1E+5 -0\n", Compare::kBytes},
      {"\"\t\"\"abc\n\"\x01\"\xfe\"\n", Compare::kBytes},
      {"{\"a\":\"b\x01" "c\" , \"d\":1}", Compare::kBytes},
      {R"("\x" "\u12" "\ud800" "\udc00" "\ud83d\u0041" "\uFFFF")", Compare::kBytes},
      {"\"\xef\xbf\xbf\" \"\xc3\" '\xc0\x80'", Compare::kBytes},
  };
  compare_replies(direct.get(), ours.get(), inputs);

  // A second pair of sessions, negotiated with oob; in one write, as QEMU
  // reads it, the negotiation holds for the exec-oob right behind it.
  net::Fd direct_oob = connect_when_ready(unix_address(direct_oob_path));
  read_line(direct_oob.get());
  net::Fd ours_oob = connect_when_ready((*server)->address());
  read_line(ours_oob.get());
  compare_replies(direct_oob.get(), ours_oob.get(), {
      {R"({"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}{"exec-oob":"migrate-pause","id":2})",
       Compare::kBytes},
      {R"({"exec-oob":"query-status","id":1})", Compare::kBytes},
      {R"({"exec-oob":"nope"})", Compare::kBytes},
      {R"({"exec-oob":"qmp_capabilities"})", Compare::kBytes},
      {R"({"execute":"a","exec-oob":"b"})", Compare::kBytes},
      {R"({"exec-oob":1})", Compare::kBytes},
      {R"({"exec-oob":"query-status","execute":1})", Compare::kBytes},
      {R"({"execute":"query-version","id":7}{"exec-oob":"migrate-pause","id":8})", Compare::kLinesAnyOrder},
  });
  server->reset();
  forwarder->reset();
  qemu->stop(2s);
  g_qemu_pid = -1;
}
