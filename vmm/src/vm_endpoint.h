// One VM's QMP endpoint: a QEMU-compatible monitor socket that stays put
// while the QEMU behind it changes. Commands pass through to the VM's
// current QEMU over a monitor of its own (QEMU serves one client per
// monitor; the endpoint serves many), QEMU's events are forwarded, and
// every client sees an event when the QEMU behind is replaced or gone.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/qmp/qmp_client.h>
#include <vmpod/qmp/qmp_server.h>

namespace vmpod::vmm {

class VmEndpoint : public qmp::Dispatcher {
 public:
  static Result<std::unique_ptr<VmEndpoint>> start(const std::string& vm, const net::SocketAddress& address);
  ~VmEndpoint() override;

  const net::SocketAddress& address() const { return server_->address(); }

  // The VM runs on this QEMU now; clients see X_VMPOD_BACKEND_CHANGED when
  // it replaces another.
  void attach(const cpuserver::GuestRuntime& runtime, const std::string& compute_pod);
  // The VM's QEMU is gone (stopped, failed): commands fail until attach().
  void detach(const std::string& reason);
  // X_VMPOD_VM_STATE to every client.
  void state_changed(std::string_view state, const std::string& reason);

  void dispatch(const qmp::Request& request, qmp::Completion done) override;

 private:
  struct Task {
    qmp::Request request;
    qmp::Completion done;
  };
  struct Backend {
    std::string qmp_socket;
    std::string compute_pod;
    int qemu_pid = 0;
  };

  explicit VmEndpoint(std::string vm) : vm_(std::move(vm)) {}
  void run();
  qmp::Reply forward(const qmp::Request& request);
  void connect_backend();
  void forward_events();

  const std::string vm_;
  std::unique_ptr<qmp::QmpServer> server_;
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
