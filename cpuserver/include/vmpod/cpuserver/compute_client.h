// A client of one compute pod's control socket, for the vmm and tools.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/net/socket.h>

namespace vmpod::cpuserver {

struct ComputePodStatus {
  std::string pod_id;
  std::vector<GuestRuntime> guests;
};

class ComputePodClient {
 public:
  static Result<std::unique_ptr<ComputePodClient>> connect(const net::SocketAddress& control,
                                                           std::chrono::milliseconds timeout);

  // Starting QEMU and mounting podfs take a while under TCG: a generous timeout.
  Result<GuestRuntime> launch(const GuestSpec& guest, const MemoryPlacement& placement);
  Status stop(const std::string& name);
  Status drop_cache(const std::string& name);
  Result<ComputePodStatus> status();
  Result<GuestStats> stats(const std::string& name);
  // ComputePod's send_guest, finish_send, cancel_send, receive_guest, working_set.
  Result<GuestTransfer> send_guest(const std::string& name);
  Status finish_send(const std::string& name);
  Status cancel_send(const std::string& name);
  Result<GuestRuntime> receive_guest(const GuestSpec& guest, const MemoryPlacement& placement,
                                     const GuestTransfer& transfer);
  Result<ReadRecording> working_set(const std::string& name);
  bool connected() const { return rpc_->connected(); }

 private:
  explicit ComputePodClient(std::unique_ptr<net::RpcClient> rpc) : rpc_(std::move(rpc)) {}
  std::unique_ptr<net::RpcClient> rpc_;
};

}  // namespace vmpod::cpuserver
