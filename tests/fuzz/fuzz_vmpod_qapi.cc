// Feeds arbitrary bytes, as QMP input, to what the schema compiler made of
// vmm/schema/vmpod.json: the argument checker and dispatch of every
// x-vmpod command (each input gets a reply, handlers see only checked
// arguments), and the agreement between the checker and the generated
// marshalling: a value the checker accepts for a type converts to that
// type without throwing and back to the same JSON.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include <vmpod/qmp/qapi.h>
#include <vmpod/qmp/qmp_protocol.h>

#include "vmpod_qapi.h"

using namespace vmpod;
using namespace vmpod::vmm;
using nlohmann::json;

namespace {

class FixedCommands final : public qapi::Commands {
 public:
  Result<std::vector<qapi::XVmpodPodInfo>> x_vmpod_query_pods() override {
    return std::vector<qapi::XVmpodPodInfo>{{"cpu0", qapi::XVmpodPodKind::kCompute, "unix:/c", true, std::nullopt}};
  }
  Result<std::vector<qapi::XVmpodMemoryTierInfo>> x_vmpod_query_memory() override {
    return fail(ErrorCode::kUnavailable, "compute pod unreachable");
  }
  Result<qapi::XVmpodCacheInfo> x_vmpod_query_cache() override { return qapi::XVmpodCacheInfo{}; }
  Status x_vmpod_migrate(const qapi::XVmpodMigrateArguments& arguments) override {
    if (arguments.to.empty()) return fail(ErrorCode::kNotFound, "no compute pod named ''");
    return {};
  }
  Result<qapi::XVmpodVmInfo> x_vmpod_query_vm() override {
    return qapi::XVmpodVmInfo{"vm0", qapi::XVmpodVmState::kRunning, std::nullopt, "cpu0", {"mem0"}, 1, "/q",
                              std::nullopt, std::nullopt, std::nullopt};
  }
  Result<qapi::XVmpodSnapshotInfo> x_vmpod_snapshot(const qapi::XVmpodSnapshotArguments& arguments) override {
    if (arguments.name.empty()) return fail(ErrorCode::kInvalidArgument, "snapshot name '' must be 1-64 letters");
    return qapi::XVmpodSnapshotInfo{arguments.name, "vm0", 1, 2, 3, {"mem0"}, 4, 0, 5, std::nullopt};
  }
  Result<std::vector<qapi::XVmpodSnapshotInfo>> x_vmpod_query_snapshots() override {
    return std::vector<qapi::XVmpodSnapshotInfo>{};
  }
  Status x_vmpod_delete_snapshot(const qapi::XVmpodDeleteSnapshotArguments& arguments) override {
    return fail(ErrorCode::kNotFound, "no snapshot named '" + arguments.name + "'");
  }
  Result<std::vector<qapi::XVmpodVmInfo>> x_vmpod_fork(const qapi::XVmpodForkArguments& arguments) override {
    if (arguments.count.value_or(1) < 1) return fail(ErrorCode::kInvalidArgument, "count must be positive");
    return std::vector<qapi::XVmpodVmInfo>{};
  }
};

const qmp::SchemaIndex& schema() {
  static const qmp::SchemaIndex index(qapi::introspection());
  return index;
}

// Accepted by the checker => converts to T and back unchanged.
template <typename T>
void round_trip(const char* type, const json& value) {
  if (schema().check_value(type, value, "value")) return;
  json back;
  try {
    back = value.get<T>();
  } catch (const std::exception&) {
    std::abort();  // the checker let through what the marshalling refuses
  }
  if (back != value) std::abort();
}

void check_value(const json& value) {
  round_trip<qapi::XVmpodPodInfo>("XVmpodPodInfo", value);
  round_trip<qapi::XVmpodMemoryTierInfo>("XVmpodMemoryTierInfo", value);
  round_trip<qapi::XVmpodCacheInfo>("XVmpodCacheInfo", value);
  round_trip<qapi::XVmpodVmInfo>("XVmpodVmInfo", value);
  round_trip<qapi::XVmpodLatency>("XVmpodLatency", value);
  round_trip<qapi::XVmpodVmStateData>("q_obj_X_VMPOD_VM_STATE-arg", value);
  round_trip<qapi::XVmpodBackendChangedData>("q_obj_X_VMPOD_BACKEND_CHANGED-arg", value);
  round_trip<qapi::XVmpodBackendGoneData>("q_obj_X_VMPOD_BACKEND_GONE-arg", value);
  round_trip<qapi::XVmpodPodKind>("XVmpodPodKind", value);
  round_trip<qapi::XVmpodVmState>("XVmpodVmState", value);
}

void dispatch_all(const json& arguments) {
  if (!arguments.is_object()) return;
  FixedCommands commands;
  for (const std::string& name : qapi::command_names()) {
    qmp::Request request;
    request.command = name;
    request.arguments = arguments;
    qmp::Reply reply = qapi::dispatch(commands, request);
    const bool checked = !schema().check_arguments(name, arguments).has_value();
    if (reply) {
      if (!checked) std::abort();  // ran with arguments the schema refuses
      auto type = schema().return_type(name);
      if (!type || schema().check_value(*type, *reply, "return")) std::abort();
    } else if (reply.error().desc.empty()) {
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qmp::JsonStreamer streamer;
  std::vector<qmp::JsonInput> inputs;
  streamer.feed(std::string_view(reinterpret_cast<const char*>(data), size), inputs);
  streamer.feed("\n", inputs);
  for (const auto& input : inputs) {
    const json* value = std::get_if<json>(&input);
    if (value == nullptr) continue;
    check_value(*value);
    dispatch_all(*value);
    if (value->is_object() && value->contains("arguments")) dispatch_all((*value)["arguments"]);
  }
  return 0;
}
