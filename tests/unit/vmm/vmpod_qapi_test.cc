// The code qapi-gen.py made from vmm/schema/vmpod.json: its introspection
// is whole, dispatch checks arguments and marshals answers, and commands
// behind an 'if' that this build does not define do not exist.
#include <criterion/criterion.h>

#include <set>

#include <vmpod/qmp/qapi.h>

#include "vmpod_qapi.h"

using namespace vmpod;
using namespace vmpod::vmm;
using nlohmann::json;

namespace {

// Answers with fixed values, so that what dispatch makes of them can be
// held to the schema.
class FixedCommands final : public qapi::Commands {
 public:
  Result<std::vector<qapi::XVmpodPodInfo>> x_vmpod_query_pods() override {
    ++calls;
    return std::vector<qapi::XVmpodPodInfo>{
        {"cpu0", qapi::XVmpodPodKind::kCompute, "unix:/run/cpu0.sock", true, std::nullopt},
        {"mem0", qapi::XVmpodPodKind::kMemory, "tcp:10.0.0.2:7000", false, "ping: timed out"}};
  }
  Result<std::vector<qapi::XVmpodMemoryTierInfo>> x_vmpod_query_memory() override {
    return fail(ErrorCode::kUnavailable, "compute pod cpu0 unreachable");
  }
  Result<qapi::XVmpodCacheInfo> x_vmpod_query_cache() override {
    return qapi::XVmpodCacheInfo{128u << 20, 1u << 20, 3, 3u << 20, 1, 0, 0, 2, 8192, 0};
  }
  Result<qapi::XVmpodVmInfo> x_vmpod_query_vm() override {
    return qapi::XVmpodVmInfo{"vm0", qapi::XVmpodVmState::kPaused, std::nullopt, "cpu0", {"mem0", "mem1"}, 42,
                              "/run/vm0.qmp", std::nullopt, std::nullopt, std::nullopt};
  }
  Status x_vmpod_migrate(const qapi::XVmpodMigrateArguments& arguments) override {
    migrated_to = arguments.to;
    return {};
  }
  Result<qapi::XVmpodSnapshotInfo> x_vmpod_snapshot(const qapi::XVmpodSnapshotArguments& arguments) override {
    return snapshot(arguments.name);
  }
  Result<std::vector<qapi::XVmpodSnapshotInfo>> x_vmpod_query_snapshots() override {
    return std::vector<qapi::XVmpodSnapshotInfo>{snapshot("ready")};
  }
  Status x_vmpod_delete_snapshot(const qapi::XVmpodDeleteSnapshotArguments& arguments) override {
    return fail(ErrorCode::kNotFound, "no snapshot named '" + arguments.name + "'");
  }
  Result<std::vector<qapi::XVmpodVmInfo>> x_vmpod_fork(const qapi::XVmpodForkArguments& arguments) override {
    fork = arguments;
    std::vector<qapi::XVmpodVmInfo> clones;
    for (int64_t i = 0; i < arguments.count.value_or(1); ++i) {
      clones.push_back({arguments.name_prefix.value_or(arguments.snapshot) + "-" + std::to_string(i),
                        qapi::XVmpodVmState::kRunning, std::nullopt, "cpu0", {"mem0"}, 100 + i, "/run/c.qmp",
                        arguments.snapshot, std::nullopt, std::nullopt});
    }
    return clones;
  }
  static qapi::XVmpodSnapshotInfo snapshot(const std::string& name) {
    return {name, "vm0", 337145, 256u << 20, 9210, {"mem0", "mem1"}, 1764690000000, 0, 24u << 20, std::nullopt};
  }
  std::string migrated_to;
  qapi::XVmpodForkArguments fork;
  int calls = 0;
};

qmp::Request request(const std::string& command, json arguments = json::object()) {
  qmp::Request out;
  out.command = command;
  out.arguments = std::move(arguments);
  return out;
}

}  // namespace

Test(vmpod_qapi, introspection_names_every_type_it_uses) {
  const json& schema = qapi::introspection();
  std::set<std::string> names;
  for (const json& info : schema) cr_assert(names.insert(info["name"].get<std::string>()).second);
  for (const json& info : schema) {
    for (const char* key : {"arg-type", "ret-type", "element-type"}) {
      if (info.contains(key)) cr_expect(names.contains(info[key].get<std::string>()), "%s", info.dump().c_str());
    }
    for (const json& member : info.value("members", json::array())) {
      if (member.contains("type")) cr_expect(names.contains(member["type"].get<std::string>()), "%s", info.dump().c_str());
    }
    const std::string name = info["name"];
    if (name.starts_with("x-vmpod-") || name.starts_with("X_VMPOD_")) {
      cr_expect_eq(info.value("features", json::array()), json::array({"unstable"}), "%s", name.c_str());
    }
  }
  std::set<std::string> commands;
  for (const json& info : schema) {
    if (info["meta-type"] == "command") commands.insert(info["name"]);
  }
  auto listed = qapi::command_names();
  cr_expect_eq(std::set<std::string>(listed.begin(), listed.end()), commands);
}

// The schema's 'if' follows what this build defines (vmm/meson.build).
Test(vmpod_qapi, conditional_commands_exist_as_the_build_defines) {
  bool fork_listed = false;
  for (const json& info : qapi::introspection()) fork_listed = fork_listed || info["name"] == "x-vmpod-fork";
#if defined(CONFIG_VMPOD_SNAPSHOT)
  cr_expect(qapi::is_command("x-vmpod-snapshot"));
  cr_expect(fork_listed);
#else
  cr_expect(!qapi::is_command("x-vmpod-snapshot"));
  cr_expect(!fork_listed);
#endif
  cr_expect(qapi::is_command("x-vmpod-query-pods"));
  cr_expect(qapi::is_command("x-vmpod-migrate"));
  cr_expect(!qapi::is_command("query-status"), "QEMU's commands are not ours");
}

Test(vmpod_qapi, dispatch_marshals_answers_that_fit_the_schema) {
  FixedCommands commands;
  qmp::SchemaIndex index(qapi::introspection());
  for (const char* name : {"x-vmpod-query-pods", "x-vmpod-query-cache", "x-vmpod-query-vm",
                           "x-vmpod-query-snapshots"}) {
    qmp::Reply reply = qapi::dispatch(commands, request(name));
    cr_assert(reply.has_value(), "%s: %s", name, reply ? "" : reply.error().desc.c_str());
    auto type = index.return_type(name);
    cr_assert(type.has_value());
    auto error = index.check_value(*type, *reply, "return");
    cr_expect(!error.has_value(), "%s: %s in %s", name, error.value_or("").c_str(), reply->dump().c_str());
  }
  json pods = qapi::dispatch(commands, request("x-vmpod-query-pods")).value();
  cr_expect_eq(pods[0], json::parse(R"({"pod-id": "cpu0", "kind": "compute", "address": "unix:/run/cpu0.sock",
                                        "healthy": true})"));
  cr_expect_eq(pods[1]["reason"], "ping: timed out");
  json vm = qapi::dispatch(commands, request("x-vmpod-query-vm")).value();
  cr_expect_eq(vm["state"], "paused");
  cr_expect(!vm.contains("reason"), "an absent optional member is left out, as QEMU does");
}

Test(vmpod_qapi, bad_arguments_never_reach_the_handler) {
  FixedCommands commands;
  qmp::Reply reply = qapi::dispatch(commands, request("x-vmpod-query-pods", {{"vm", "vm0"}}));
  cr_assert(!reply.has_value());
  cr_expect_eq(reply.error().error_class, qmp::ErrorClass::kGenericError);
  cr_expect_str_eq(reply.error().desc.c_str(), "Parameter 'vm' is unexpected");
  cr_expect_eq(commands.calls, 0);
}

Test(vmpod_qapi, arguments_reach_the_handler_typed) {
  FixedCommands commands;
  qmp::Reply missing = qapi::dispatch(commands, request("x-vmpod-migrate"));
  cr_assert(!missing.has_value());
  cr_expect_str_eq(missing.error().desc.c_str(), "Parameter 'to' is missing");
  qmp::Reply done = qapi::dispatch(commands, request("x-vmpod-migrate", {{"to", "cpu1"}}));
  cr_assert(done.has_value());
  cr_expect_eq(*done, json::object());
  cr_expect_eq(commands.migrated_to, "cpu1");
}

Test(vmpod_qapi, fork_arguments_and_clones) {
  FixedCommands commands;
  qmp::SchemaIndex index(qapi::introspection());
  qmp::Reply reply = qapi::dispatch(commands, request("x-vmpod-fork", {{"snapshot", "ready"}, {"count", 3},
                                                                         {"name-prefix", "t"}, {"paused", true}}));
  cr_assert(reply.has_value(), "%s", reply ? "" : reply.error().desc.c_str());
  cr_expect_eq(commands.fork.count.value_or(0), 3);
  cr_expect_eq(commands.fork.paused.value_or(false), true);
  cr_expect(!commands.fork.compute_pod.has_value());
  cr_expect(!index.check_value(*index.return_type("x-vmpod-fork"), *reply, "return").has_value());
  cr_assert_eq(reply->size(), 3u);
  cr_expect_eq((*reply)[2]["name"], "t-2");
  cr_expect_eq((*reply)[2]["snapshot"], "ready");
  qmp::Reply wrong = qapi::dispatch(commands, request("x-vmpod-fork", {{"snapshot", "ready"}, {"count", "3"}}));
  cr_assert(!wrong.has_value());
  cr_expect_str_eq(wrong.error().desc.c_str(), "Invalid parameter type for 'count', expected: integer");
  qmp::Reply taken = qapi::dispatch(commands, request("x-vmpod-snapshot", {{"name", "s1"}}));
  cr_assert(taken.has_value());
  cr_expect_eq((*taken)["name"], "s1");
  cr_expect_eq((*taken)["memory-pods"], json::array({"mem0", "mem1"}));
  cr_expect(!taken->contains("parent"));
}

Test(vmpod_qapi, handler_errors_become_generic_errors) {
  FixedCommands commands;
  qmp::Reply reply = qapi::dispatch(commands, request("x-vmpod-query-memory"));
  cr_assert(!reply.has_value());
  cr_expect_eq(reply.error().error_class, qmp::ErrorClass::kGenericError);
  cr_expect_str_eq(reply.error().desc.c_str(), "compute pod cpu0 unreachable");
}

Test(vmpod_qapi, event_data_round_trips) {
  qapi::XVmpodVmStateData data{qapi::XVmpodVmState::kFailed, "memory pod mem1 lost"};
  json text = data;
  cr_expect_eq(text, json::parse(R"({"state": "failed", "reason": "memory pod mem1 lost"})"));
  qmp::SchemaIndex index(qapi::introspection());
  auto type = index.event_type("X_VMPOD_VM_STATE");
  cr_assert(type.has_value());
  cr_expect(!index.check_value(*type, text, "data").has_value());
  auto back = text.get<qapi::XVmpodVmStateData>();
  cr_expect_eq(back.state, qapi::XVmpodVmState::kFailed);
  cr_expect_eq(back.reason.value_or(""), "memory pod mem1 lost");
}
