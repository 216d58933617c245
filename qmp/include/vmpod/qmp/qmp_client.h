// A synchronous QMP client for the CLI, for tests and for driving a real
// QEMU's monitor: connect() reads the greeting and negotiates capabilities;
// execute() sends a command and waits for the reply with the same id, so a
// late reply to a command that timed out is never taken for the next one's.
// Events that arrive meanwhile are kept for next_event(). Not thread-safe:
// one caller at a time.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string_view>

#include <nlohmann/json.hpp>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>
#include <vmpod/qmp/qmp_protocol.h>

namespace vmpod::qmp {

class QmpClient {
 public:
  // Events kept for next_event(); beyond this the oldest are dropped.
  static constexpr size_t kMaxQueuedEvents = 4096;
  // Replies can be large (query-qmp-schema is ~200 KiB); QEMU's own bound.
  static constexpr size_t kMaxReplyBytes = size_t{64} << 20;

  static Result<std::unique_ptr<QmpClient>> connect(const net::SocketAddress& address,
                                                    std::chrono::milliseconds timeout,
                                                    bool enable_oob = false);
  ~QmpClient();

  // The greeting exactly as received ({"QMP": {...}}).
  const nlohmann::json& greeting() const { return greeting_; }

  // The "return" value; an error reply becomes an Error whose message is
  // "command: Class: desc" (CommandNotFound and DeviceNotFound are kNotFound,
  // DeviceNotActive kWrongState, the rest kInvalidArgument). kUnavailable when
  // the connection fails or the timeout passes; the connection stays usable
  // after a timeout.
  Result<nlohmann::json> execute(std::string_view command,
                                 const nlohmann::json& arguments = nlohmann::json::object(),
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Sends request as given and returns the next reply object whole (with
  // "return" or "error", and "id" if any): for differential tests and for
  // commands that need exec-oob.
  Result<nlohmann::json> execute_raw(const nlohmann::json& request,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Sends bytes as they are (malformed input, several commands at once).
  Status send_raw(std::string_view bytes, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // The next message that is not an event.
  Result<nlohmann::json> read_reply(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // The next event ({"event", "data", "timestamp"}), queued or read.
  Result<nlohmann::json> next_event(std::chrono::milliseconds timeout);
  // False once the server closed the connection or sent what cannot be
  // parsed; a call that only timed out leaves it true.
  bool connected() const { return !closed_; }

  // The negotiated connection, for a caller that reads it from then on in
  // an event loop of its own: the socket, the parser holding any partial
  // input, and the events already read. Nothing read is lost.
  struct Connection {
    net::Fd fd;
    JsonStreamer streamer;
    std::deque<nlohmann::json> events;
  };
  static Connection release(std::unique_ptr<QmpClient> client);

 private:
  explicit QmpClient(net::Fd fd) : fd_(std::move(fd)) {}
  using Deadline = std::chrono::steady_clock::time_point;
  Status send_until(std::string_view bytes, Deadline deadline);
  // Reads once and files what arrives under replies_ and events_.
  Status read_some(Deadline deadline);
  Result<nlohmann::json> next_reply(Deadline deadline);

  net::Fd fd_;
  JsonStreamer streamer_{kMaxReplyBytes};
  nlohmann::json greeting_;
  std::deque<nlohmann::json> replies_;
  std::deque<nlohmann::json> events_;
  uint64_t next_id_ = 1;
  bool closed_ = false;
};

}  // namespace vmpod::qmp
