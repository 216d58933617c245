// QmpSession without sockets: greeting, negotiation, qmp_dispatch()'s
// checks with QEMU 7.2's texts, id echo, in-band order, exec-oob, events.
#include <criterion/criterion.h>

#include <string>
#include <vector>

#include <vmpod/qmp/qmp_protocol.h>

using namespace vmpod::qmp;
using nlohmann::json;

namespace {

const Greeting kGreeting{7, 2, 22, "Debian 1:7.2+dfsg-7+deb12u18+b3 vmpod 0.1.0"};

// The session's output as lines, without the greeting.
struct Harness {
  Harness() : session(42, kGreeting) {
    std::string greeting = session.take_output();
    cr_assert(greeting.ends_with("\r\n"));
  }

  std::vector<std::string> send(const std::string& bytes) {
    session.receive(bytes);
    return lines();
  }

  std::vector<std::string> lines() {
    std::vector<std::string> out;
    std::string output = session.take_output();
    for (size_t at = 0; at < output.size();) {
      size_t end = output.find("\r\n", at);
      cr_assert(end != std::string::npos, "unterminated output %s", output.c_str());
      out.push_back(output.substr(at, end - at));
      at = end + 2;
    }
    return out;
  }

  void negotiate(bool oob) {
    auto got = send(oob ? R"({"execute":"qmp_capabilities","arguments":{"enable":["oob"]}})"
                        : R"({"execute":"qmp_capabilities"})");
    cr_assert(got == std::vector<std::string>{R"({"return": {}})"});
  }

  QmpSession session;
};

void expect_lines(const std::vector<std::string>& got, const std::vector<std::string>& expected) {
  std::string a, b;
  for (const auto& line : got) a += line + "\n";
  for (const auto& line : expected) b += line + "\n";
  cr_expect(got == expected, "\n got\n%s expected\n%s", a.c_str(), b.c_str());
}

std::string error(const std::string& desc, const std::string& id = "") {
  std::string id_part = id.empty() ? "" : R"("id": )" + id + ", ";
  return "{" + id_part + R"("error": {"class": "GenericError", "desc": ")" + desc + R"("}})";
}

}  // namespace

Test(qmp_session, greeting_is_qemus) {
  QmpSession session(1, kGreeting);
  cr_expect(session.take_output() ==
            R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, )"
            R"("package": "Debian 1:7.2+dfsg-7+deb12u18+b3 vmpod 0.1.0"}, "capabilities": ["oob"]}})"
            "\r\n");
}

Test(qmp_session, negotiation_rules) {
  Harness h;
  expect_lines(h.send(R"({"execute":"query-version","id":5})"),
               {R"({"id": 5, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities )"
                R"(negotiation with 'qmp_capabilities'"}})"});
  // The request checks come before the negotiation check.
  expect_lines(h.send(R"({"execute":"query-status","x":1})"), {error("QMP input member 'x' is unexpected")});
  expect_lines(h.send(R"({"exec-oob":"qmp_capabilities"})"),
               {error("QMP input member 'exec-oob' is unexpected")});
  expect_lines(h.send(R"({"execute":"qmp_capabilities","arguments":{"enable":"oob"}})"),
               {error("Invalid parameter type for 'enable', expected: array")});
  expect_lines(h.send(R"({"execute":"qmp_capabilities","arguments":{"enable":null}})"),
               {error("Invalid parameter type for 'enable', expected: array")});
  expect_lines(h.send(R"({"execute":"qmp_capabilities","arguments":{"enable":[1]}})"),
               {error("Invalid parameter type for 'enable[0]', expected: string")});
  expect_lines(h.send(R"({"execute":"qmp_capabilities","arguments":{"y":1,"enable":["foo"]}})"),
               {error("Parameter 'null' does not accept value 'foo'")});
  expect_lines(h.send(R"({"execute":"qmp_capabilities","arguments":{"x":1}})"),
               {error("Parameter 'x' is unexpected")});
  cr_expect(!h.session.negotiated());
  expect_lines(h.send(R"({"execute":"qmp_capabilities","arguments":{"enable":["oob","oob"]},"id":"x"})"),
               {R"({"return": {}, "id": "x"})"});
  cr_expect(h.session.negotiated() && h.session.oob_enabled());
  expect_lines(h.send(R"({"execute":"qmp_capabilities"})"),
               {R"({"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is )"
                R"(already complete, command ignored"}})"});
  expect_lines(h.send(R"({"exec-oob":"qmp_capabilities"})"),
               {error("The command qmp_capabilities does not support OOB")});
  cr_expect(h.session.take_dispatches().empty());
}

Test(qmp_session, request_checks_as_qmp_dispatch) {
  Harness h;
  h.negotiate(false);
  expect_lines(h.send(R"({"execute":"query-status","arguments":[]})"),
               {error("QMP input member 'arguments' must be an object")});
  expect_lines(h.send(R"({"execute":"query-status","arguments":null})"),
               {error("QMP input member 'arguments' must be an object")});
  expect_lines(h.send(R"({"execute":"query-status","foo":1})"), {error("QMP input member 'foo' is unexpected")});
  expect_lines(h.send(R"([1,2] "str")"),
               {error("QMP input must be a JSON object"), error("QMP input must be a JSON object")});
  expect_lines(h.send(R"({"foo":1})"), {error("QMP input member 'foo' is unexpected")});
  expect_lines(h.send(R"({"execute":1})"), {error("QMP input member 'execute' must be a string")});
  expect_lines(h.send(R"({"id":3})"), {error("QMP input lacks member 'execute'", "3")});
  // Several faults: the first in QDict order, as QEMU.
  expect_lines(h.send(R"({"execute":"q","argumentz":{},"id":1,"foo":2,"bar":3,"zzz":4})"),
               {error("QMP input member 'bar' is unexpected", "1")});
  expect_lines(h.send(R"({"exec-oob":"query-status","id":1})"),
               {error("QMP input member 'exec-oob' is unexpected", "1")});
  expect_lines(h.send("{bad json}\n"), {error("JSON parse error, invalid keyword 'bad'")});
  cr_expect(h.session.take_dispatches().empty());
}

Test(qmp_session, oob_request_checks) {
  Harness h;
  h.negotiate(true);
  expect_lines(h.send(R"({"execute":"a","exec-oob":"b"})"),
               {error("QMP input member 'execute' clashes with 'exec-oob'")});
  expect_lines(h.send(R"({"exec-oob":1})"), {error("QMP input member 'exec-oob' must be a string")});
  expect_lines(h.send(R"({"exec-oob":"query-status","execute":1})"),
               {error("QMP input member 'execute' must be a string")});
}

Test(qmp_session, id_is_echoed_whatever_it_is) {
  Harness h;
  h.negotiate(false);
  h.send(R"({"execute":"a","id":1.5}{"execute":"b","id":"s"}{"execute":"c","id":{"x":[1,null]}})"
         R"({"execute":"d","id":null}{"execute":"e"})");
  std::vector<std::string> replies;
  for (int i = 0; i < 5; ++i) {
    auto dispatches = h.session.take_dispatches();
    cr_assert_eq(dispatches.size(), 1u, "one in-band command at a time");
    cr_expect_eq(dispatches[0].request.client_id, 42u);
    cr_expect(dispatches[0].request.arguments == json::object());
    h.session.complete(dispatches[0].command, json{{"n", i}});
    for (auto& line : h.lines()) replies.push_back(line);
  }
  expect_lines(replies, {R"({"return": {"n": 0}, "id": 1.5})", R"({"return": {"n": 1}, "id": "s"})",
                         R"({"return": {"n": 2}, "id": {"x": [1, null]}})", R"({"return": {"n": 3}, "id": null})",
                         R"({"return": {"n": 4}})"});
}

Test(qmp_session, error_replies_carry_class_and_desc) {
  Harness h;
  h.negotiate(false);
  h.send(R"({"execute":"device_del","arguments":{"id":"nope"},"id":7})");
  auto dispatches = h.session.take_dispatches();
  cr_assert_eq(dispatches.size(), 1u);
  cr_expect(dispatches[0].request.command == "device_del");
  cr_expect(dispatches[0].request.arguments == json({{"id", "nope"}}));
  cr_expect(dispatches[0].request.id == json(7));
  h.session.complete(dispatches[0].command, qmp_fail(ErrorClass::kDeviceNotFound, "Device 'nope' not found"));
  expect_lines(h.lines(), {R"({"id": 7, "error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}})"});
}

Test(qmp_session, in_band_replies_in_request_order) {
  Harness h;
  h.negotiate(false);
  // A command, a parse error and a bad request behind it wait their turn.
  h.send(R"({"execute":"slow","id":1} {bad} {"execute":"fast","id":2} [] {"execute":"last","id":3})");
  cr_expect_eq(h.session.queued_commands(), 5u);
  auto first = h.session.take_dispatches();
  cr_assert_eq(first.size(), 1u);
  cr_expect(h.lines().empty());
  h.session.complete(first[0].command, json::object());
  auto second = h.session.take_dispatches();
  cr_assert_eq(second.size(), 1u);
  cr_expect(second[0].request.command == "fast");
  expect_lines(h.lines(), {R"({"return": {}, "id": 1})", error("JSON parse error, invalid keyword 'bad'")});
  // Completing an unknown or finished command changes nothing.
  h.session.complete(first[0].command, json::object());
  h.session.complete(999, json::object());
  cr_expect(h.lines().empty());
  h.session.complete(second[0].command, json::object());
  auto third = h.session.take_dispatches();
  cr_assert_eq(third.size(), 1u);
  expect_lines(h.lines(), {R"({"return": {}, "id": 2})", error("QMP input must be a JSON object")});
  h.session.complete(third[0].command, json::object());
  expect_lines(h.lines(), {R"({"return": {}, "id": 3})"});
  cr_expect_eq(h.session.queued_commands(), 0u);
}

Test(qmp_session, exec_oob_overtakes_in_band) {
  Harness h;
  h.negotiate(true);
  h.send(R"({"execute":"slow","id":1}{"execute":"queued","id":2}{"exec-oob":"migrate-pause","id":"oob"})");
  auto dispatches = h.session.take_dispatches();
  cr_assert_eq(dispatches.size(), 2u, "the in-band head and the oob command");
  const auto& slow = dispatches[0].request;
  const auto& oob = dispatches[1].request;
  cr_expect(!slow.oob && slow.command == "slow");
  cr_expect(oob.oob && oob.command == "migrate-pause");
  h.session.complete(dispatches[1].command, json::object());
  expect_lines(h.lines(), {R"({"return": {}, "id": "oob"})"});
  h.session.complete(dispatches[0].command, json::object());
  expect_lines(h.lines(), {R"({"return": {}, "id": 1})"});
  cr_expect(h.session.take_dispatches().size() == 1u);
}

Test(qmp_session, events_only_after_negotiation) {
  Harness h;
  const std::string event = R"({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"})" "\r\n";
  h.session.add_event(event);
  cr_expect(h.lines().empty());
  h.negotiate(false);
  h.session.add_event(event);
  expect_lines(h.lines(), {R"({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"})"});
}

Test(qmp_session, negotiation_holds_for_the_rest_of_the_same_read) {
  // QEMU 7.2 answers exec-oob right after qmp_capabilities in one write as
  // negotiated: its monitor reads byte by byte while a command is queued.
  Harness h;
  h.send(R"({"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}{"exec-oob":"migrate-pause","id":2})");
  auto dispatches = h.session.take_dispatches();
  cr_assert_eq(dispatches.size(), 1u);
  cr_expect(dispatches[0].request.oob);
}
