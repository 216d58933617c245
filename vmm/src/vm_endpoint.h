// One VM's monitors: a QEMU-compatible QMP socket (and optionally a second
// one on TCP) and an HMP text socket, which stay put while the QEMU behind
// them changes. The x-vmpod-* commands of the schema (vmm/schema/vmpod.json)
// and our HMP lines run on the endpoint's worker thread, since they wait on
// the vmm; every other command goes straight from the QMP server's event
// loop to the VM's current QEMU through a QemuUpstream, over a monitor of
// its own (QEMU serves one client per monitor; the endpoint serves many),
// with query-commands, query-qmp-schema and HMP's help merged with ours on
// the way back. QEMU's events are forwarded as they arrive, and every
// client sees an event when the QEMU behind is replaced or gone.
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
#include <vmpod/qmp/qmp_server.h>

#include "qemu_upstream.h"
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
  using Done = std::function<void(qmp::Reply)>;
  struct Task {
    qmp::Request request;
    Done done;
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
  // Whether the command needs the worker (it waits on the vmm).
  bool runs_on_worker(const qmp::Request& request) const;
  // On the worker: runs one command, now or, through QEMU, later.
  void execute(const qmp::Request& request, Done done);
  // Through QEMU, with ours merged into what needs it. Any thread.
  void forward(QemuUpstream& upstream, const qmp::Request& request, Done done);
  // The connection to the current QEMU, if it is up.
  std::shared_ptr<QemuUpstream> ready_upstream();
  // On the worker: connects to the current backend if not connected.
  void connect_backend();
  // Ends the current connection, failing its commands with reason.
  void drop_upstream(const std::string& reason);
  void forward_event(const nlohmann::json& event);
  template <typename Emit>
  void to_every_server(Emit emit);

  const std::string vm_;
  const std::unique_ptr<qapi::Commands> commands_;
  const QemuEventListener on_qemu_event_;
  std::vector<std::unique_ptr<qmp::QmpServer>> servers_;  // unix first, then tcp
  std::unique_ptr<qmp::HmpServer> hmp_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task> tasks_;
  std::deque<std::string> qemu_events_;  // names, for on_qemu_event_
  std::optional<Backend> backend_;       // what the endpoint should talk to
  uint64_t backend_generation_ = 0;      // bumped by attach and detach
  std::string detached_reason_ = "the vm has not started";
  std::shared_ptr<QemuUpstream> upstream_;
  uint64_t upstream_generation_ = 0;     // the backend generation upstream_ belongs to
  uint64_t attempted_generation_ = 0;    // the last one the worker tried to connect to
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace vmpod::vmm
