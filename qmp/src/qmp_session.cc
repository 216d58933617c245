// One client's QMP state: monitor/qmp.c (greeting, negotiation, the
// in-band queue and exec-oob) and qapi/qmp-dispatch.c (the checks of a
// request and their error texts) of QEMU 7.2.
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include <vmpod/qmp/qmp_protocol.h>

#include "qemu_compat.h"
#include "qmp_line.h"

namespace vmpod::qmp {
namespace {

tl::unexpected<QmpError> generic_error(std::string desc) {
  return qmp_fail(ErrorClass::kGenericError, std::move(desc));
}

std::string reply_line(Reply reply, const std::optional<nlohmann::json>& id) {
  nlohmann::json message = nlohmann::json::object();
  if (reply) {
    message["return"] = std::move(*reply);
  } else {
    message["error"] = {{"class", error_class_name(reply.error().error_class)},
                        {"desc", std::move(reply.error().desc)}};
  }
  if (id) message["id"] = *id;
  return qmp_line(message);
}

// QEMU's qmp_is_oob(): such input skips the in-band queue, negotiated or not.
bool is_oob_shaped(const nlohmann::json& input) {
  return input.is_object() && input.contains("exec-oob") && !input.contains("execute");
}

struct Checked {
  std::string command;
  nlohmann::json arguments;
  bool oob;
};

// qmp_dispatch_check_obj(): members are checked in QDict order, so with
// several faults the same one as in QEMU is reported.
tl::expected<Checked, QmpError> check_request(const nlohmann::json& input, bool allow_oob) {
  if (!input.is_object()) return generic_error("QMP input must be a JSON object");
  const Member* exec = nullptr;
  const nlohmann::json* arguments = nullptr;
  for (const Member* member : qdict_order(input)) {
    const auto& [name, value] = *member;
    if (name == "execute" || (name == "exec-oob" && allow_oob)) {
      if (!value.is_string()) {
        return generic_error(fmt::format("QMP input member '{}' must be a string", name));
      }
      if (exec) {
        return generic_error(fmt::format("QMP input member '{}' clashes with '{}'", name, exec->first));
      }
      exec = member;
    } else if (name == "arguments") {
      if (!value.is_object()) return generic_error("QMP input member 'arguments' must be an object");
      arguments = &value;
    } else if (name != "id") {
      return generic_error(fmt::format("QMP input member '{}' is unexpected", name));
    }
  }
  if (!exec) return generic_error("QMP input lacks member 'execute'");
  return Checked{exec->second.get<std::string>(),
                 arguments ? *arguments : nlohmann::json::object(), exec->first == "exec-oob"};
}

// The QAPI visitor's checks of qmp_capabilities' arguments; true when they
// enable oob.
tl::expected<bool, QmpError> capabilities_arguments(const nlohmann::json& arguments) {
  bool oob = false;
  if (auto enable = arguments.find("enable"); enable != arguments.end()) {
    if (!enable->is_array()) return generic_error("Invalid parameter type for 'enable', expected: array");
    for (size_t i = 0; i < enable->size(); ++i) {
      const nlohmann::json& capability = (*enable)[i];
      if (!capability.is_string()) {
        return generic_error(
            fmt::format("Invalid parameter type for 'enable[{}]', expected: string", i));
      }
      if (capability != "oob") {
        // Sic: QEMU 7.2's visitor has no name for a list member here.
        return generic_error(fmt::format("Parameter 'null' does not accept value '{}'",
                                         capability.get_ref<const std::string&>()));
      }
      oob = true;
    }
  }
  for (const Member* member : qdict_order(arguments)) {
    if (member->first != "enable") {
      return generic_error(fmt::format("Parameter '{}' is unexpected", member->first));
    }
  }
  return oob;
}

}  // namespace

std::string_view error_class_name(ErrorClass error_class) {
  switch (error_class) {
    case ErrorClass::kGenericError: return "GenericError";
    case ErrorClass::kCommandNotFound: return "CommandNotFound";
    case ErrorClass::kDeviceNotActive: return "DeviceNotActive";
    case ErrorClass::kDeviceNotFound: return "DeviceNotFound";
    case ErrorClass::kKVMMissingCap: return "KVMMissingCap";
  }
  return "GenericError";
}

std::optional<ErrorClass> parse_error_class(std::string_view name) {
  for (ErrorClass error_class :
       {ErrorClass::kGenericError, ErrorClass::kCommandNotFound, ErrorClass::kDeviceNotActive,
        ErrorClass::kDeviceNotFound, ErrorClass::kKVMMissingCap}) {
    if (error_class_name(error_class) == name) return error_class;
  }
  return std::nullopt;
}

struct QmpSession::State {
  State(uint64_t id, size_t max_value_bytes) : client_id(id), streamer(max_value_bytes) {}

  // Runs one input as qmp_dispatch() would; the command id when it went to
  // the dispatcher, whose reply then comes through complete().
  std::optional<uint64_t> run(JsonInput input);
  // Runs queued in-band inputs until one waits for the dispatcher.
  void advance() {
    while (!running && !queue.empty()) {
      JsonInput input = std::move(queue.front());
      queue.pop_front();
      running = run(std::move(input));
    }
  }

  const uint64_t client_id;
  JsonStreamer streamer;
  std::deque<JsonInput> queue;
  std::optional<uint64_t> running;  // the in-band command with the dispatcher
  // The request id of every command with the dispatcher, in-band or not.
  std::unordered_map<uint64_t, std::optional<nlohmann::json>> ids;
  uint64_t next_command = 1;
  bool negotiated = false;
  bool oob = false;
  std::string output;
  std::vector<Dispatch> dispatches;
};

std::optional<uint64_t> QmpSession::State::run(JsonInput input) {
  if (auto* error = std::get_if<JsonParseError>(&input)) {
    output += reply_line(generic_error(std::move(error->desc)), std::nullopt);
    return std::nullopt;
  }
  auto& value = std::get<nlohmann::json>(input);
  std::optional<nlohmann::json> id;
  if (value.is_object()) {
    if (auto found = value.find("id"); found != value.end()) id = std::move(*found);
  }
  auto checked = check_request(value, oob);
  if (!checked) {
    output += reply_line(tl::unexpected(std::move(checked.error())), id);
    return std::nullopt;
  }
  if (checked->command == "qmp_capabilities") {
    // Before negotiation it is the only command; after, it refuses to run
    // again, but only once exec-oob and the arguments have been checked.
    if (checked->oob) {
      output += reply_line(generic_error("The command qmp_capabilities does not support OOB"), id);
      return std::nullopt;
    }
    auto enable_oob = capabilities_arguments(checked->arguments);
    if (!enable_oob) {
      output += reply_line(tl::unexpected(std::move(enable_oob.error())), id);
    } else if (negotiated) {
      output += reply_line(qmp_fail(ErrorClass::kCommandNotFound,
                                    "Capabilities negotiation is already complete, command ignored"),
                           id);
    } else {
      negotiated = true;
      oob = *enable_oob;
      output += reply_line(nlohmann::json::object(), id);
    }
    return std::nullopt;
  }
  if (!negotiated) {
    output += reply_line(qmp_fail(ErrorClass::kCommandNotFound,
                                  "Expecting capabilities negotiation with 'qmp_capabilities'"),
                         id);
    return std::nullopt;
  }
  const uint64_t command = next_command++;
  ids.emplace(command, id);
  dispatches.push_back(Dispatch{command, Request{client_id, std::move(checked->command),
                                                 std::move(checked->arguments), std::move(id),
                                                 checked->oob}});
  return command;
}

QmpSession::QmpSession(uint64_t client_id, const Greeting& greeting, size_t max_value_bytes)
    : state_(std::make_unique<State>(client_id, max_value_bytes)) {
  nlohmann::json version = {
      {"qemu", {{"major", greeting.major}, {"minor", greeting.minor}, {"micro", greeting.micro}}},
      {"package", greeting.package}};
  state_->output = qmp_line({{"QMP", {{"version", version}, {"capabilities", {"oob"}}}}});
}

QmpSession::~QmpSession() = default;
QmpSession::QmpSession(QmpSession&&) noexcept = default;
QmpSession& QmpSession::operator=(QmpSession&&) noexcept = default;

void QmpSession::receive(std::string_view bytes) {
  std::vector<JsonInput> inputs;
  state_->streamer.feed(bytes, inputs);
  // One input at a time, so that what an in-band input the session answers
  // itself changes (qmp_capabilities) holds for the next one: QEMU reads a
  // monitor byte by byte while its queue is busy, with the same effect.
  for (JsonInput& input : inputs) {
    auto* value = std::get_if<nlohmann::json>(&input);
    if (value && is_oob_shaped(*value)) {
      state_->run(std::move(input));
    } else {
      state_->queue.push_back(std::move(input));
      state_->advance();
    }
  }
}

void QmpSession::complete(uint64_t command, Reply reply) {
  auto found = state_->ids.find(command);
  if (found == state_->ids.end()) return;
  state_->output += reply_line(std::move(reply), found->second);
  state_->ids.erase(found);
  if (state_->running == command) {
    state_->running.reset();
    state_->advance();
  }
}

void QmpSession::add_event(std::string_view event_text) {
  if (state_->negotiated) state_->output += event_text;
}

std::string QmpSession::take_output() { return std::exchange(state_->output, {}); }

std::vector<QmpSession::Dispatch> QmpSession::take_dispatches() {
  return std::exchange(state_->dispatches, {});
}

size_t QmpSession::queued_commands() const {
  return state_->queue.size() + (state_->running ? 1 : 0);
}

bool QmpSession::negotiated() const { return state_->negotiated; }
bool QmpSession::oob_enabled() const { return state_->oob; }

}  // namespace vmpod::qmp
