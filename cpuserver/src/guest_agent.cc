#include <vmpod/cpuserver/guest_agent.h>

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <sstream>

#include <vmpod/base/base64.h>

namespace vmpod::cpuserver {

namespace {

// How long a killed command has to report its exit.
constexpr std::chrono::seconds kKillGrace{5};
// How long a request may wait for room in the channel: a guest that reads
// nothing for this long (hung, or not booted) does not answer either.
constexpr std::chrono::seconds kSendTimeout{30};

std::chrono::milliseconds left_until(std::chrono::steady_clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
}

}  // namespace

Result<std::unique_ptr<GuestAgent>> GuestAgent::connect(const std::string& socket_path,
                                                        std::chrono::milliseconds timeout) {
  net::SocketAddress address{net::SocketAddress::Kind::kUnix, socket_path, "", 0};
  auto fd = net::connect_socket(address, timeout);
  if (!fd) return fail(fd.error().context("guest agent"));
  std::unique_ptr<GuestAgent> agent(new GuestAgent(std::move(*fd)));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // Until the guest has booted and opened its port, pings go unanswered
  // and wait in the channel: ask again every half second, while there is
  // room for another, and take the first answer to any of them.
  while (left_until(deadline).count() > 0) {
    auto step = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
    std::string id = std::to_string(agent->next_id_++);
    auto sent = agent->send_line("ping " + id, step);
    if (!sent && sent.error().code() != ErrorCode::kUnavailable) return fail(sent.error().context("guest agent"));
    while (true) {
      auto line = agent->read_line(step);
      if (!line) {
        if (line.error().code() == ErrorCode::kUnavailable && left_until(step).count() <= 0) break;
        return fail(line.error().context("guest agent"));
      }
      if (line->rfind("pong ", 0) == 0) return agent;
    }
  }
  return fail(ErrorCode::kUnavailable, "guest agent did not answer in time");
}

Status GuestAgent::send_line(const std::string& line, std::chrono::steady_clock::time_point deadline) {
  std::string data = line + "\n";
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd_.get(), data.data() + sent, data.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return fail_errno("send", errno);
    auto left = left_until(deadline);
    if (left.count() <= 0) return fail(ErrorCode::kUnavailable, "the guest reads nothing from its agent channel");
    pollfd pfd{fd_.get(), POLLOUT, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) return fail_errno("poll", errno);
  }
  return {};
}

Result<std::string> GuestAgent::read_line(std::chrono::steady_clock::time_point deadline) {
  while (true) {
    size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    auto left = left_until(deadline);
    if (left.count() <= 0) return fail(ErrorCode::kUnavailable, "no answer in time");
    pollfd pfd{fd_.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) return fail_errno("poll", errno);
    if (ready <= 0) continue;
    char chunk[65536];
    ssize_t got = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    if (got == 0) return fail(ErrorCode::kWrongState, "the guest agent channel closed");
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail_errno("recv", errno);
    }
    buffer_.append(chunk, static_cast<size_t>(got));
  }
}

Result<std::string> GuestAgent::start(const std::string& command) {
  std::string id = std::to_string(next_id_++);
  VMPOD_TRY_CTX(send_line("run " + id + " " + base64_encode(command), std::chrono::steady_clock::now() + kSendTimeout),
                "guest agent");
  return id;
}

Result<GuestCommandResult> GuestAgent::run(const std::string& command, std::chrono::milliseconds timeout) {
  auto id = start(command);
  if (!id) return fail(id.error());
  return await(*id, command, std::chrono::steady_clock::now() + timeout, std::nullopt);
}

Result<GuestCommandResult> GuestAgent::run_with_limit(const std::string& command, std::chrono::milliseconds limit) {
  auto id = start(command);
  if (!id) return fail(id.error());
  auto kill_at = std::chrono::steady_clock::now() + limit;
  // The kill's answer and the command's exit follow within the grace.
  return await(*id, command, kill_at + kKillGrace, kill_at);
}

Result<GuestCommandResult> GuestAgent::await(const std::string& id, const std::string& command,
                                             std::chrono::steady_clock::time_point deadline,
                                             std::optional<std::chrono::steady_clock::time_point> kill_at) {
  GuestCommandResult result;
  while (true) {
    auto wait_until = kill_at && !result.timed_out ? std::min(*kill_at, deadline) : deadline;
    auto line = read_line(wait_until);
    if (!line) {
      bool at_limit = kill_at && !result.timed_out && std::chrono::steady_clock::now() >= *kill_at;
      if (line.error().code() != ErrorCode::kUnavailable || !at_limit) {
        return fail(line.error().context("guest agent: " + command));
      }
      VMPOD_TRY_CTX(send_line("kill " + id, std::chrono::steady_clock::now() + kSendTimeout), "guest agent");
      result.timed_out = true;
      continue;
    }
    std::istringstream words(*line);
    std::string kind, line_id, value;
    words >> kind >> line_id >> value;
    // Errors about a request name it: "error run 7: invalid base64".
    if (kind == "error" && line_id == "run" && value == id + ":") {
      return fail(ErrorCode::kInternal, "guest agent: " + *line);
    }
    if (line_id != id) continue;
    if (kind == "started") {
      result.started_at = std::chrono::steady_clock::now();
    } else if (kind == "output") {
      // "-" is no output; "truncated N" follows when the agent kept only
      // the first 64 KiB of N bytes.
      auto decoded = value == "-" ? std::optional<std::string>("") : base64_decode(value);
      if (!decoded) return fail(ErrorCode::kInternal, "guest agent: malformed output line");
      result.output += *decoded;
      std::string more, total;
      words >> more >> total;
      if (more == "truncated") result.output += "\n[output cut: " + total + " bytes in all]\n";
    } else if (kind == "exit") {
      result.exit_code = std::atoi(value.c_str());
      return result;
    }
  }
}

}  // namespace vmpod::cpuserver
