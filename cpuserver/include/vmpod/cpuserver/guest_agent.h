// The host side of the guest agent channel (images/README.md): runs shell
// commands in the guest over its virtio-serial port and returns their exit
// codes and output.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>

namespace vmpod::cpuserver {

struct GuestCommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together, at most 64 KiB
  bool timed_out = false;  // run_with_limit killed it at its limit
  // When the agent's answer that it forked the command arrived.
  std::chrono::steady_clock::time_point started_at;
};

class GuestAgent {
 public:
  // Connects to the agent socket and waits until the agent answers a ping.
  static Result<std::unique_ptr<GuestAgent>> connect(const std::string& socket_path,
                                                     std::chrono::milliseconds timeout);

  // A command not done after `timeout` is an error (and left running).
  Result<GuestCommandResult> run(const std::string& command, std::chrono::milliseconds timeout);
  // A command not done after `limit` is killed (its whole process group)
  // and its result says timed_out; only an agent that does not answer is
  // an error.
  Result<GuestCommandResult> run_with_limit(const std::string& command, std::chrono::milliseconds limit);

 private:
  // Sends the command; returns its id.
  Result<std::string> start(const std::string& command);
  // Reads the command's answers until it exits or `deadline`; at `kill_at`
  // (if given) it asks the agent to kill the command.
  Result<GuestCommandResult> await(const std::string& id, const std::string& command,
                                   std::chrono::steady_clock::time_point deadline,
                                   std::optional<std::chrono::steady_clock::time_point> kill_at);
  explicit GuestAgent(net::Fd fd) : fd_(std::move(fd)) {}
  // Waits for room in the channel until `deadline` (kUnavailable after).
  Status send_line(const std::string& line, std::chrono::steady_clock::time_point deadline);
  // The next line whose second word is `id`; other lines are skipped.
  Result<std::string> read_line(std::chrono::steady_clock::time_point deadline);

  net::Fd fd_;
  std::string buffer_;
  uint64_t next_id_ = 1;
};

}  // namespace vmpod::cpuserver
