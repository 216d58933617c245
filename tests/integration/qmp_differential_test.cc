// The same script of QMP input, byte for byte, to a plain QEMU's monitor and
// to a vmpod VM's endpoint (same QEMU binary, kernel and command line, RAM
// on memory pods): every reply has the same shape, member for member, and
// errors, ids, versions and HMP text are equal. The documented additions
// are the only differences: " vmpod VERSION" after the greeting's package,
// the x-vmpod-* commands in query-commands, and X_VMPOD_* events.
#include <criterion/criterion.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <vmpod/cpuserver/qemu.h>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

std::unique_ptr<cpuserver::QemuProcess> g_plain;

void stop_everything() {
  g_plain.reset();  // kills the plain QEMU by its pid
  testing::stop_all();
}

// Differences between QEMU's value and ours: types, member names, and, where
// `exact`, values.
void compare(const json& qemu, const json& vmpod, const std::string& path, bool exact,
             std::vector<std::string>& differences) {
  if (qemu.type() != vmpod.type() && !(qemu.is_number() && vmpod.is_number())) {
    differences.push_back(path + ": " + qemu.type_name() + " vs " + vmpod.type_name());
    return;
  }
  if (qemu.is_object()) {
    for (const auto& [key, value] : qemu.items()) {
      if (!vmpod.contains(key)) differences.push_back(path + "." + key + ": missing");
      else compare(value, vmpod[key], path + "." + key, exact, differences);
    }
    for (const auto& [key, value] : vmpod.items()) {
      if (!qemu.contains(key)) differences.push_back(path + "." + key + ": not in QEMU's");
    }
  } else if (qemu.is_array()) {
    if (qemu.size() != vmpod.size()) {
      differences.push_back(path + ": " + std::to_string(qemu.size()) + " vs " + std::to_string(vmpod.size()) +
                            " elements");
    }
    for (size_t i = 0; i < std::min(qemu.size(), vmpod.size()); ++i) {
      compare(qemu[i], vmpod[i], path + "[" + std::to_string(i) + "]", exact, differences);
    }
  } else if (exact && qemu != vmpod) {
    differences.push_back(path + ": " + qemu.dump() + " vs " + vmpod.dump());
  }
}

void expect_same(const json& qemu, const json& vmpod, const std::string& what, bool exact) {
  std::vector<std::string> differences;
  // Error replies and ids are always compared exactly: clients match on them.
  compare(qemu, vmpod, what, exact || qemu.contains("error"), differences);
  if (qemu.contains("id") || vmpod.contains("id")) compare(qemu.value("id", json()), vmpod.value("id", json()), what + ".id", true, differences);
  std::string joined;
  for (const auto& difference : differences) joined += "\n  " + difference;
  cr_expect(differences.empty(), "%s differs:%s\nqemu:  %s\nvmpod: %s", what.c_str(), joined.c_str(),
            qemu.dump().c_str(), vmpod.dump().c_str());
}

struct Step {
  std::string input;
  bool exact;  // values too, not only the shape
};

}  // namespace

Test(qmp_differential, the_endpoint_answers_as_qemu_does, .timeout = 300, .fini = stop_everything) {
  auto guest = testing::boot_guest("qmp-differential", {});

  // A plain QEMU with the same guest; its second monitor is free for us.
  cpuserver::QemuConfig config;
  config.guest = testing::guest_spec({});
  config.run_dir = testing::test_dir("qmp-differential-plain");
  auto plain = cpuserver::QemuProcess::start(config);
  cr_assert(plain.has_value(), "plain qemu: %s", plain ? "" : plain.error().to_string().c_str());
  g_plain = std::move(*plain);

  testing::RawQmp qemu(testing::unix_socket(g_plain->paths().vmm_qmp_socket));
  testing::RawQmp vmpod(testing::unix_socket(guest->vm.qmp_endpoint));

  // The greeting: QEMU's version; the package string gains " vmpod X".
  json qemu_greeting = qemu.greeting();
  json vmpod_greeting = vmpod.greeting();
  const std::string package = qemu_greeting["QMP"]["version"]["package"];
  cr_expect_eq(vmpod_greeting["QMP"]["version"]["package"], package + " vmpod " VMPOD_VERSION);
  vmpod_greeting["QMP"]["version"]["package"] = package;
  expect_same(qemu_greeting, vmpod_greeting, "greeting", true);

  const std::vector<Step> script = {
      {R"({"execute": "query-status", "id": "early"})", true},
      {R"({"execute": "qmp_capabilities", "id": 1})", true},
      {R"({"execute": "qmp_capabilities", "id": 2})", true},
      {R"({"execute": "query-status", "id": 3})", true},
      {R"({"execute": "query-cpus-fast", "id": 4})", false},
      {R"({"execute": "stop", "id": 5})", true},
      {R"({"execute": "query-status", "id": 6})", true},
      {R"({"execute": "cont", "id": 7})", true},
      {R"({"execute": "query-version", "id": 8})", true},
      {R"({"execute": "no-such-command", "id": 9})", true},
      {R"({"execute": "query-status", "arguments": {"bogus": 1}, "id": 10})", true},
      {R"({"execute": "query-name", "id": 11})", true},
      {R"({"execute": "human-monitor-command", "arguments": {"command-line": "info status"}, "id": 12})", true},
      {R"({"execute": "human-monitor-command", "arguments": {}, "id": 13})", true},
      {R"({"execute": "query-kvm", "id": {"nested": [1, "two"]}})", true},
      {R"({"execute": })", true},
      {R"([1, 2])", true},
      {R"({"id": 14})", true},
      {R"({"execute": "query-status", "arguments": [], "id": 15})", true},
      {R"({"exec-oob": "query-status", "id": 16})", true},
  };
  for (const Step& step : script) {
    qemu.send(step.input + "\n");
    vmpod.send(step.input + "\n");
    expect_same(qemu.reply(), vmpod.reply(), step.input, step.exact);
  }

  // query-commands: QEMU's list, then ours, which are all x-vmpod-*.
  const std::string list_commands = R"({"execute": "query-commands", "id": 20})";
  qemu.send(list_commands + "\n");
  vmpod.send(list_commands + "\n");
  json qemu_commands = qemu.reply();
  json vmpod_commands = vmpod.reply();
  std::set<std::string> qemu_names, extra;
  for (const auto& command : qemu_commands["return"]) qemu_names.insert(command["name"]);
  for (const auto& command : vmpod_commands["return"]) {
    if (!qemu_names.contains(command["name"])) extra.insert(command["name"]);
  }
  cr_expect_eq(vmpod_commands["return"].size(), qemu_commands["return"].size() + extra.size(),
               "a QEMU command is missing from the endpoint's list");
  cr_expect(!extra.empty());
  for (const auto& name : extra) cr_expect(name.starts_with("x-vmpod-"), "undocumented addition %s", name.c_str());

  // The same events from stop and cont, in the same shape; ours besides.
  qemu.drain_events(1s);
  vmpod.drain_events(1s);
  std::vector<json> vmpod_qemu_events;
  for (const auto& event : vmpod.events) {
    const std::string name = event["event"];
    if (!name.starts_with("X_VMPOD_")) vmpod_qemu_events.push_back(event);
  }
  cr_assert_eq(vmpod_qemu_events.size(), qemu.events.size(), "events: %s vs %s", json(qemu.events).dump().c_str(),
               json(vmpod.events).dump().c_str());
  for (size_t i = 0; i < qemu.events.size(); ++i) {
    cr_expect_eq(vmpod_qemu_events[i]["event"], qemu.events[i]["event"]);
    expect_same(qemu.events[i], vmpod_qemu_events[i], "event " + qemu.events[i]["event"].get<std::string>(), false);
  }
}
