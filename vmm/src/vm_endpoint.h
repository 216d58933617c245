// One VM's monitors: a QEMU-compatible QMP socket and an HMP text socket
// that stay put while the QEMU behind them changes. The x-vmpod-* commands
// of the schema (vmm/schema/vmpod.json) run here; every other command
// passes through to the VM's current QEMU over a monitor of its own (QEMU
// serves one client per monitor; the endpoint serves many), with
// query-commands and query-qmp-schema merged with ours. QEMU's events are
// forwarded, and every client sees an event when the QEMU behind is
// replaced or gone. One worker thread runs every command in arrival order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/qmp/hmp_server.h>
#include <vmpod/qmp/qmp_client.h>
#include <vmpod/qmp/qmp_server.h>

#include "vm_commands.h"
#include "vmpod_qapi.h"

namespace vmpod::vmm {

class VmEndpoint : public qmp::Dispatcher {
 public:
  struct Addresses {
    net::SocketAddress qmp;
    net::SocketAddress hmp;
    std::optional<net::SocketAddress> qmp_tcp;  // a second QMP socket, on loopback
  };

  // Called on the endpoint's worker with the name of every event from the
  // VM's QEMU, after it has been forwarded.
  using QemuEventListener = std::function<void(const std::string& event)>;

  static Result<std::unique_ptr<VmEndpoint>> start(const std::string& vm, const Addresses& addresses,
                                                   std::unique_ptr<qapi::Commands> commands,
                                                   QemuEventListener on_qemu_event);
  ~VmEndpoint() override;

  const net::SocketAddress& address() const { return servers_.front()->address(); }
  const net::SocketAddress& hmp_address() const { return hmp_->address(); }
  std::optional<net::SocketAddress> tcp_address() const;

  // The VM runs on this QEMU now; clients see X_VMPOD_BACKEND_CHANGED when
  // it replaces another.
  void attach(const cpuserver::GuestRuntime& runtime, const std::string& compute_pod);
  // The VM's QEMU is gone (stopped, failed): commands fail until attach().
  void detach(const std::string& reason);
  // X_VMPOD_VM_STATE to every client.
  void state_changed(VmState state, const std::string& reason);

  void dispatch(const qmp::Request& request, qmp::Completion done) override;

 private:
  struct Task {
    qmp::Request request;
    std::function<void(qmp::Reply)> done;
  };
  struct Backend {
    std::string qmp_socket;
    std::string compute_pod;
    int qemu_pid = 0;
  };

  VmEndpoint(std::string vm, std::unique_ptr<qapi::Commands> commands, QemuEventListener on_qemu_event)
      : vm_(std::move(vm)), commands_(std::move(commands)), on_qemu_event_(std::move(on_qemu_event)) {}
  void run();
  void enqueue(Task task);
  // What the HMP socket does with one line: human-monitor-command.
  std::string run_hmp_line(const std::string& line);
  qmp::Reply execute(const qmp::Request& request);
  qmp::Reply human_monitor_command(const qmp::Request& request);
  qmp::Reply forward(const qmp::Request& request);
  template <typename Emit>
  void to_every_server(Emit emit);
  void connect_backend();
  void forward_events();

  const std::string vm_;
  const std::unique_ptr<qapi::Commands> commands_;
  const QemuEventListener on_qemu_event_;
  std::vector<std::unique_ptr<qmp::QmpServer>> servers_;  // unix first, then tcp
  std::unique_ptr<qmp::HmpServer> hmp_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task> tasks_;
  std::optional<Backend> backend_;   // what the endpoint should talk to
  uint64_t backend_generation_ = 0;  // bumped by attach and detach
  std::string detached_reason_ = "the vm has not started";
  bool stopping_ = false;
  std::thread worker_;

  // Owned by the worker thread.
  std::unique_ptr<qmp::QmpClient> qemu_;
  uint64_t connected_generation_ = 0;
  uint64_t next_forward_id_ = 1;
};

}  // namespace vmpod::vmm
