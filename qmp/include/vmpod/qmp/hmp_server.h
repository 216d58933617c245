// HMP, QEMU's human monitor, as a plain text socket that many clients can
// use at once: a banner and a "(qemu) " prompt, one command line in, its
// text out with "\r\n" line ends as QEMU's monitor writes them. No echo
// and no line editing: it is for scripts, `socat` and `nc` (QEMU's
// readline would echo each byte back). One thread per client, since a
// command may wait seconds for QEMU; bounded clients and line length.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>

namespace vmpod::qmp {

struct HmpOptions {
  size_t max_clients = 32;
  size_t max_line_bytes = 4096;  // QEMU's READLINE_CMD_BUF_SIZE
  // A client that does not take its output for this long is dropped.
  std::chrono::milliseconds send_timeout{10000};
};

class HmpServer {
 public:
  // Runs one command line (without its line end) and returns its output.
  // Called on the client's thread; may block.
  using Handler = std::function<std::string(const std::string& command_line)>;

  static Result<std::unique_ptr<HmpServer>> start(const net::SocketAddress& address, std::string banner,
                                                  Handler handler, const HmpOptions& options = {});
  ~HmpServer();  // stop()

  const net::SocketAddress& address() const;
  size_t client_count() const;
  // Disconnects every client, waits for their threads (a handler running
  // finishes first), removes a unix socket's file. Idempotent.
  void stop();

 private:
  struct Impl;
  explicit HmpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vmpod::qmp
