// QMP as QEMU 7.2 speaks it, without any I/O, so the protocol can be tested
// and fuzzed byte for byte:
//  - JsonStreamer is QEMU's JSON dialect (json-lexer + json-streamer +
//    json-parser): a stream of bytes becomes top-level values, each parsed
//    the moment its last token arrives, with QEMU's extensions ('single
//    quoted' strings, \' escapes) and QEMU's exact "JSON parse error, ..."
//    texts. nlohmann::json is only the result type.
//  - qmp_json_text() writes JSON the way QEMU does: ", " and ": "
//    separators, non-ASCII as \uXXXX, members in QDict hash order, so
//    greetings, errors and events are byte-identical to QEMU's.
//  - QmpSession is one client's protocol state: greeting, capabilities
//    negotiation, the checks of qmp_dispatch() with QEMU's error texts,
//    in-band commands one at a time in order, exec-oob out of band. Bytes go
//    in; reply bytes and Requests for a dispatcher come out.
// Differences from QEMU, on purpose: an over-long or over-deep value is
// refused and then skipped to its end (QEMU restarts lexing in the middle of
// it); a non-finite number is written as null (QEMU writes "inf", which is
// not JSON); members sharing a QDict bucket are written in name order (QEMU
// writes the later-inserted first, which a parsed nlohmann::json no longer
// knows).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>
#include <tl/expected.hpp>

namespace vmpod::qmp {

// Default bound on one input value; QEMU allows 64 MiB, but no QMP command
// needs more than a few KiB and each client may have one value in flight.
inline constexpr size_t kDefaultMaxValueBytes = size_t{1} << 20;
// QEMU's MAX_NESTING: deeper input is refused.
inline constexpr int kMaxNesting = 1024;

// One complete top-level input that could not be used, with the desc QEMU
// answers it with ("JSON parse error, stray '@'").
struct JsonParseError {
  std::string desc;
};
using JsonInput = std::variant<nlohmann::json, JsonParseError>;

// Splits a byte stream into top-level JSON values as QEMU does: a value ends
// when its braces and brackets balance (a scalar at top level is a value of
// its own), each value or error is produced exactly once, and a lexical
// error (a stray byte, a control character in a string) drops the value in
// progress and skips to the next structural or control character, which is
// how a QMP client resynchronizes (QMP spec: send a control character or
// 0xFF). A value over max_value_bytes or deeper than kMaxNesting is refused
// the moment it crosses the limit and the rest of it is skipped by counting
// brackets, without buffering. Memory is bounded by max_value_bytes times the
// DOM overhead of what it holds (at worst about 16x, for "[1,1,1,...]").
class JsonStreamer {
 public:
  explicit JsonStreamer(size_t max_value_bytes = kDefaultMaxValueBytes);
  ~JsonStreamer();
  JsonStreamer(JsonStreamer&&) noexcept;
  JsonStreamer& operator=(JsonStreamer&&) noexcept;

  // Appends every value and error that bytes complete to out. A number or
  // keyword at top level ends only at the next byte, as in QEMU.
  void feed(std::string_view bytes, std::vector<JsonInput>& out);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// QEMU's JSON text for value (no trailing newline). Never fails: invalid
// UTF-8 in strings becomes U+FFFD, as in QEMU.
std::string qmp_json_text(const nlohmann::json& value);

// QEMU's error classes (qapi/error.json); QEMU asks for GenericError
// everywhere except where a client must tell the cases apart.
enum class ErrorClass {
  kGenericError,
  kCommandNotFound,
  kDeviceNotActive,
  kDeviceNotFound,
  kKVMMissingCap,
};
std::string_view error_class_name(ErrorClass error_class);
std::optional<ErrorClass> parse_error_class(std::string_view name);

struct QmpError {
  ErrorClass error_class = ErrorClass::kGenericError;
  std::string desc;
};

// What a command produced: its "return" value (an object, {} for commands
// without one, or a list) or an error.
using Reply = tl::expected<nlohmann::json, QmpError>;

inline tl::unexpected<QmpError> qmp_fail(ErrorClass error_class, std::string desc) {
  return tl::unexpected<QmpError>(QmpError{error_class, std::move(desc)});
}

// What the QEMU behind is; the greeting advertises it. vmpod appends
// " vmpod X" to QEMU's package string.
struct Greeting {
  int64_t major = 0;
  int64_t minor = 0;
  int64_t micro = 0;
  std::string package;
};

// A command for the dispatcher, already checked as qmp_dispatch() does.
struct Request {
  uint64_t client_id = 0;
  std::string command;
  nlohmann::json arguments = nlohmann::json::object();  // always an object
  std::optional<nlohmann::json> id;                     // echoed in the reply; may be null
  bool oob = false;                                     // sent with exec-oob
};

// One client's protocol state. Single-threaded: the server's event loop owns
// it. Every input value gets exactly one reply: in-band ones in input order,
// each run only after the previous one completed (QEMU's monitor runs one
// command at a time); exec-oob ones at once, their replies free to overtake.
class QmpSession {
 public:
  // A command handed to the dispatcher; complete(command, reply) answers it.
  struct Dispatch {
    uint64_t command = 0;
    Request request;
  };

  // The greeting is the first output.
  QmpSession(uint64_t client_id, const Greeting& greeting,
             size_t max_value_bytes = kDefaultMaxValueBytes);
  ~QmpSession();
  QmpSession(QmpSession&&) noexcept;
  QmpSession& operator=(QmpSession&&) noexcept;

  void receive(std::string_view bytes);
  // A reply for a command from take_dispatches(); unknown or already
  // completed commands are ignored.
  void complete(uint64_t command, Reply reply);
  // event_text is a whole QMP event line; clients that have not negotiated
  // capabilities get no events, as in QEMU.
  void add_event(std::string_view event_text);

  std::string take_output();
  std::vector<Dispatch> take_dispatches();

  // In-band inputs waiting or running: the server stops reading from a
  // client while this is at its limit, as QEMU suspends a busy monitor.
  size_t queued_commands() const;
  bool negotiated() const;
  bool oob_enabled() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace vmpod::qmp
