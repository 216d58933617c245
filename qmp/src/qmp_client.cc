#include <vmpod/qmp/qmp_client.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "qmp_line.h"

namespace vmpod::qmp {
namespace {

using Clock = std::chrono::steady_clock;

// The one place QMP error classes become vmpod error codes.
ErrorCode error_code_for(std::string_view error_class) {
  auto parsed = parse_error_class(error_class);
  if (parsed == ErrorClass::kCommandNotFound || parsed == ErrorClass::kDeviceNotFound) {
    return ErrorCode::kNotFound;
  }
  if (parsed == ErrorClass::kDeviceNotActive) return ErrorCode::kWrongState;
  return ErrorCode::kInvalidArgument;
}

Status wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return fail(ErrorCode::kUnavailable, "timed out");
    pollfd entry{fd, events, 0};
    int ready = ::poll(&entry, 1, static_cast<int>(std::min<decltype(left)>(left, INT_MAX)));
    if (ready > 0) return {};
    if (ready < 0 && errno != EINTR) return fail_errno("poll", errno);
  }
}

}  // namespace

Result<std::unique_ptr<QmpClient>> QmpClient::connect(const net::SocketAddress& address,
                                                      std::chrono::milliseconds timeout,
                                                      bool enable_oob) {
  const std::string what = "qmp " + address.to_string();
  const auto deadline = Clock::now() + timeout;
  auto fd = net::connect_socket(address, timeout);
  if (!fd) return fail(fd.error().context(what));
  std::unique_ptr<QmpClient> client(new QmpClient(std::move(*fd)));

  auto greeting = client->next_reply(deadline);
  if (!greeting) return fail(greeting.error().context(what + ": greeting"));
  if (!greeting->is_object() || !greeting->contains("QMP")) {
    return fail(ErrorCode::kUnavailable,
                fmt::format("{}: not a QMP greeting: {}", what, qmp_json_text(*greeting)));
  }
  client->greeting_ = std::move(*greeting);

  nlohmann::json arguments = nlohmann::json::object();
  if (enable_oob) {
    const auto& offered = client->greeting_["QMP"].value("capabilities", nlohmann::json::array());
    if (std::find(offered.begin(), offered.end(), "oob") == offered.end()) {
      return fail(ErrorCode::kInvalidArgument, what + ": server does not offer oob");
    }
    arguments["enable"] = {"oob"};
  }
  auto negotiated = client->execute(
      "qmp_capabilities", arguments,
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
  if (!negotiated) return fail(negotiated.error().context(what + ": qmp_capabilities"));
  return client;
}

QmpClient::~QmpClient() = default;

Result<nlohmann::json> QmpClient::execute(std::string_view command, const nlohmann::json& arguments,
                                          std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const uint64_t id = next_id_++;
  nlohmann::json request = {{"execute", command}, {"id", id}};
  if (!arguments.empty()) request["arguments"] = arguments;
  if (auto sent = send_until(qmp_line(request), deadline); !sent) return fail(sent.error());
  for (;;) {
    auto reply = next_reply(deadline);
    if (!reply) return fail(reply.error().context(std::string(command)));
    // A reply to an earlier command that timed out: not this one's.
    if (!reply->is_object() || reply->value("id", nlohmann::json()) != id) continue;
    if (auto value = reply->find("return"); value != reply->end()) return std::move(*value);
    auto error = reply->find("error");
    if (error == reply->end() || !error->is_object()) {
      return fail(ErrorCode::kUnavailable,
                  fmt::format("{}: malformed reply {}", command, qmp_json_text(*reply)));
    }
    const std::string error_class = error->value("class", "");
    return fail(error_code_for(error_class),
                fmt::format("{}: {}: {}", command, error_class, error->value("desc", "")));
  }
}

Result<nlohmann::json> QmpClient::execute_raw(const nlohmann::json& request,
                                              std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  if (auto sent = send_until(qmp_line(request), deadline); !sent) return fail(sent.error());
  return next_reply(deadline);
}

Status QmpClient::send_raw(std::string_view bytes, std::chrono::milliseconds timeout) {
  return send_until(bytes, Clock::now() + timeout);
}

Result<nlohmann::json> QmpClient::read_reply(std::chrono::milliseconds timeout) {
  return next_reply(Clock::now() + timeout);
}

Result<nlohmann::json> QmpClient::next_event(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (events_.empty()) {
    if (auto got = read_some(deadline); !got) return fail(got.error());
  }
  nlohmann::json event = std::move(events_.front());
  events_.pop_front();
  return event;
}

Status QmpClient::send_until(std::string_view bytes, Deadline deadline) {
  if (closed_) return fail(ErrorCode::kUnavailable, "connection closed");
  while (!bytes.empty()) {
    ssize_t sent = ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent >= 0) {
      bytes.remove_prefix(static_cast<size_t>(sent));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      closed_ = true;
      return fail(ErrorCode::kUnavailable, fmt::format("send: {}", std::strerror(errno)));
    }
    if (auto ready = wait_ready(fd_.get(), POLLOUT, deadline); !ready) return ready;
  }
  return {};
}

Status QmpClient::read_some(Deadline deadline) {
  if (closed_) return fail(ErrorCode::kUnavailable, "connection closed");
  std::array<char, 64 * 1024> buffer;
  ssize_t got;
  for (;;) {
    got = ::recv(fd_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (got >= 0) break;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      closed_ = true;
      return fail(ErrorCode::kUnavailable, fmt::format("recv: {}", std::strerror(errno)));
    }
    if (auto ready = wait_ready(fd_.get(), POLLIN, deadline); !ready) return ready;
  }
  if (got == 0) {
    closed_ = true;
    return fail(ErrorCode::kUnavailable, "connection closed by the server");
  }
  std::vector<JsonInput> inputs;
  streamer_.feed(std::string_view(buffer.data(), static_cast<size_t>(got)), inputs);
  for (JsonInput& input : inputs) {
    if (auto* error = std::get_if<JsonParseError>(&input)) {
      // The stream can no longer be trusted to pair replies with requests.
      closed_ = true;
      return fail(ErrorCode::kUnavailable, "malformed output from the server: " + error->desc);
    }
    auto& message = std::get<nlohmann::json>(input);
    if (message.is_object() && message.contains("event")) {
      if (events_.size() == kMaxQueuedEvents) {
        spdlog::warn("qmp client: {} events unread, dropping the oldest", kMaxQueuedEvents);
        events_.pop_front();
      }
      events_.push_back(std::move(message));
    } else {
      replies_.push_back(std::move(message));
    }
  }
  return {};
}

Result<nlohmann::json> QmpClient::next_reply(Deadline deadline) {
  while (replies_.empty()) {
    if (auto got = read_some(deadline); !got) return fail(got.error());
  }
  nlohmann::json reply = std::move(replies_.front());
  replies_.pop_front();
  return reply;
}

QmpClient::Connection QmpClient::release(std::unique_ptr<QmpClient> client) {
  return Connection{std::move(client->fd_), std::move(client->streamer_), std::move(client->events_)};
}

}  // namespace vmpod::qmp
