// The host side of the guest agent channel (images/README.md): runs shell
// commands in the guest over its virtio-serial port and returns their exit
// codes and output.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>

namespace vmpod::cpuserver {

struct GuestCommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together, at most 64 KiB
};

class GuestAgent {
 public:
  // Connects to the agent socket and waits until the agent answers a ping.
  static Result<std::unique_ptr<GuestAgent>> connect(const std::string& socket_path,
                                                     std::chrono::milliseconds timeout);

  Result<GuestCommandResult> run(const std::string& command, std::chrono::milliseconds timeout);

 private:
  explicit GuestAgent(net::Fd fd) : fd_(std::move(fd)) {}
  Status send_line(const std::string& line);
  // The next line whose second word is `id`; other lines are skipped.
  Result<std::string> read_line(std::chrono::steady_clock::time_point deadline);

  net::Fd fd_;
  std::string buffer_;
  uint64_t next_id_ = 1;
};

}  // namespace vmpod::cpuserver
