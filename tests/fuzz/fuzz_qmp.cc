// Feeds arbitrary bytes to what a QMP client reaches without sockets: the
// JSON streamer (every chunking must give the same values and errors; what
// it parses must write back to text that parses to the same value; where
// nlohmann::json accepts the input, the streamer agrees unless QEMU's rules
// differ) and a whole QmpSession (every input gets exactly one reply, the
// output is valid QMP, and how the bytes are split changes nothing).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/qmp/qmp_protocol.h>

using namespace vmpod::qmp;
using nlohmann::json;

namespace {

// chunk == 0: sizes taken from the input itself, so the fuzzer explores splits.
std::vector<std::string_view> split(std::string_view bytes, size_t chunk) {
  std::vector<std::string_view> pieces;
  for (size_t at = 0; at < bytes.size();) {
    size_t size = chunk != 0 ? chunk : 1 + static_cast<unsigned char>(bytes[at]) % 29;
    pieces.push_back(bytes.substr(at, size));
    at += size;
  }
  return pieces;
}

std::vector<std::string> stream(std::string_view bytes, size_t chunk, size_t max_value_bytes) {
  JsonStreamer streamer(max_value_bytes);
  std::vector<JsonInput> inputs;
  for (auto piece : split(bytes, chunk)) streamer.feed(piece, inputs);
  std::vector<std::string> out;
  for (const auto& input : inputs) {
    if (const auto* error = std::get_if<JsonParseError>(&input)) {
      out.push_back("E" + error->desc);
      continue;
    }
    const json& value = std::get<json>(input);
    std::string text = qmp_json_text(value);
    out.push_back("V" + text);
    bool finite = true;
    for (const auto& item : value.flatten()) {
      if (item.is_number_float() && !std::isfinite(item.get<double>())) finite = false;
    }
    if (finite) {
      // What was parsed writes back to text that parses to the same value.
      JsonStreamer again;
      std::vector<JsonInput> round;
      again.feed(text + "\n", round);
      if (round.size() != 1 || !std::holds_alternative<json>(round[0]) || std::get<json>(round[0]) != value) {
        std::abort();
      }
    }
  }
  return out;
}

// Where QEMU's reading of JSON is stricter than nlohmann's.
bool known_difference(const std::string& error) {
  for (const char* difference :
       {"duplicate key", "is not a valid Unicode character", "invalid UTF-8 sequence in string",
        "JSON nesting depth limit exceeded", "JSON token size limit exceeded"}) {
    if (error.find(difference) != std::string::npos) return true;
  }
  return false;
}

void check_against_nlohmann(std::string_view text) {
  if (text.starts_with("\xEF\xBB\xBF")) return;  // nlohmann skips a byte order mark, QEMU does not
  json reference = json::parse(text, nullptr, false);
  if (reference.is_discarded()) return;
  // A scalar at the end needs one more byte to end, as in QEMU.
  auto ours = stream(std::string(text) + "\n", 0, kDefaultMaxValueBytes);
  if (ours.size() != 1) std::abort();
  if (ours[0][0] == 'E') {
    if (!known_difference(ours[0])) std::abort();
    return;
  }
  JsonStreamer streamer;
  std::vector<JsonInput> inputs;
  streamer.feed(std::string(text) + "\n", inputs);
  if (std::get<json>(inputs[0]) != reference) std::abort();
}

struct SessionRun {
  std::string output;
  size_t inputs = 0;
  bool out_of_band = false;  // some input was exec-oob: its reply may overtake
};

// Every command is answered as soon as it is dispatched, with a value or an
// error depending only on the request, so the output cannot depend on timing
// but for the order in which out-of-band replies overtake.
SessionRun run_session(std::string_view bytes, size_t chunk) {
  QmpSession session(1, Greeting{7, 2, 0, "fuzz"}, 256);
  JsonStreamer counter(256);
  std::vector<JsonInput> inputs;
  SessionRun run;
  size_t pieces = 0;
  for (auto piece : split(bytes, chunk)) {
    session.receive(piece);
    counter.feed(piece, inputs);
    for (;;) {
      auto dispatches = session.take_dispatches();
      if (dispatches.empty()) break;
      for (auto& dispatch : dispatches) {
        const Request& request = dispatch.request;
        if (request.client_id != 1 || !request.arguments.is_object()) std::abort();
        if (request.command.size() % 2) {
          session.complete(dispatch.command, json{{"arguments", request.arguments}, {"oob", request.oob}});
        } else {
          session.complete(dispatch.command, qmp_fail(ErrorClass::kGenericError, request.command));
        }
      }
    }
    // Now and then, not after every byte: the output would balloon.
    if (pieces++ % 32 == 0) {
      session.add_event(R"({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "E"})" "\r\n");
    }
    run.output += session.take_output();
  }
  if (session.queued_commands() != 0) std::abort();
  run.inputs = inputs.size();
  for (const auto& input : inputs) {
    const json* value = std::get_if<json>(&input);
    if (value && value->is_object() && value->contains("exec-oob") && !value->contains("execute")) {
      run.out_of_band = true;
    }
  }
  return run;
}

void check_session(std::string_view bytes) {
  SessionRun whole = run_session(bytes, bytes.size() == 0 ? 1 : bytes.size());
  SessionRun split_run = run_session(bytes, 0);
  SessionRun bytewise = run_session(bytes, 1);
  // Events come with the pieces: compare the replies only.
  auto replies = [](const SessionRun& run) {
    JsonStreamer streamer(size_t{1} << 30);
    std::vector<JsonInput> messages;
    streamer.feed(run.output, messages);
    std::vector<json> out;
    bool greeting = true;
    for (auto& message : messages) {
      if (!std::holds_alternative<json>(message)) std::abort();
      json& value = std::get<json>(message);
      if (!value.is_object()) std::abort();
      if (greeting) {
        if (!value.contains("QMP")) std::abort();
        greeting = false;
        continue;
      }
      if (value.contains("event")) continue;
      const bool has_return = value.contains("return");
      const bool has_error = value.contains("error");
      if (has_return == has_error || value.size() != 1u + (value.contains("id") ? 1 : 0)) std::abort();
      if (has_error && (!value["error"]["class"].is_string() || !value["error"]["desc"].is_string())) std::abort();
      out.push_back(std::move(value));
    }
    return out;
  };
  auto in_some_order = [](std::vector<json> values) {
    std::vector<std::string> texts;
    for (const auto& value : values) texts.push_back(qmp_json_text(value));
    std::sort(texts.begin(), texts.end());
    return texts;
  };
  auto expected = replies(whole);
  if (expected.size() != whole.inputs) std::abort();  // one reply per input
  for (const SessionRun* other : {&split_run, &bytewise}) {
    auto got = replies(*other);
    if (whole.out_of_band ? in_some_order(got) != in_some_order(expected) : got != expected) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (size_t limit : {kDefaultMaxValueBytes, size_t{64}}) {
    auto whole = stream(bytes, bytes.size() == 0 ? 1 : bytes.size(), limit);
    if (stream(bytes, 1, limit) != whole || stream(bytes, 0, limit) != whole) std::abort();
  }
  check_against_nlohmann(bytes);
  check_session(bytes);
  return 0;
}
