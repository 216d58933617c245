// The VM's QEMU monitor as the endpoint's event loop uses it: commands
// from any thread go out with ids of the upstream's own, QEMU's replies are
// read in the loop that watches the socket and complete them, and QEMU's
// events go to a callback. No thread of its own, so a passed-through
// command costs no hand-off between threads.
//
// At most kInFlight in-band commands are with QEMU at once: QEMU stops
// reading a monitor whose queue holds 8, and then not even exec-oob would
// get through. The rest wait here, in order. Output that the socket does
// not take at once waits for the loop to report it writable.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include <vmpod/qmp/qmp_client.h>
#include <vmpod/qmp/qmp_protocol.h>

namespace vmpod::vmm {

class QemuUpstream {
 public:
  static constexpr size_t kInFlight = 4;

  using Done = std::function<void(qmp::Reply)>;
  using EventHandler = std::function<void(nlohmann::json event)>;
  // The epoll events the loop should wait for now; called with the
  // upstream's lock held, so it must only pass them on.
  using InterestHandler = std::function<void(uint32_t events)>;

  QemuUpstream(qmp::QmpClient::Connection connection, EventHandler on_event, InterestHandler on_interest);

  int fd() const { return fd_.get(); }
  // Sends request to QEMU; done gets its reply, or an error once the
  // connection is lost or closed. Any thread.
  void send(const qmp::Request& request, Done done);
  // The loop saw these epoll events on fd(). Reads and completes what
  // arrived, writes what waits. Returns false once the connection is over.
  bool on_ready(uint32_t events);
  // Fails every command not yet answered with `reason`. Idempotent.
  void close(const std::string& reason);
  bool closed() const;
  // The events read before the loop took over, for the caller to pass on.
  std::deque<nlohmann::json> take_early_events();

 private:
  struct Pending {
    std::string line;
    bool oob = false;
    Done done;
  };

  // With the lock held: moves queued commands into the output while the
  // window allows, writes what the socket takes.
  void pump_locked();
  // Returns the completions to run once the lock is dropped.
  std::vector<std::pair<Done, qmp::Reply>> fail_all_locked(const std::string& reason);

  net::Fd fd_;
  const EventHandler on_event_;
  const InterestHandler on_interest_;

  mutable std::mutex mutex_;
  qmp::JsonStreamer streamer_;
  std::deque<nlohmann::json> early_events_;
  std::deque<std::pair<uint64_t, Pending>> queued_;  // not yet written
  std::map<uint64_t, Pending> sent_;                  // written, not answered
  size_t in_band_sent_ = 0;
  std::string output_;
  uint64_t next_id_ = 1;
  uint32_t interest_ = 0;
  bool closed_ = false;
  std::string closed_reason_;
};

}  // namespace vmpod::vmm
