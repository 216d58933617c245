// A whole vmpod cluster on this machine, as child processes: N memory pods,
// one compute pod and a vmm, each its own `vmpod` process with its control
// socket in one directory. `vmpod run` uses it when no cluster is given;
// integration tests and benchmarks start their pods with it too.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/base/subprocess.h>
#include <vmpod/net/fabric.h>
#include <vmpod/net/socket.h>

namespace vmpod::vmm {

struct LocalClusterConfig {
  std::string vmpod_binary;  // the vmpod executable to run each pod with
  std::string dir;           // sockets, logs and guest run directories
  unsigned memory_pods = 2;
  unsigned compute_pods = 1;  // cpu0, cpu1, ...
  uint64_t memory_pod_capacity = 1ull << 30;
  net::FabricProvider provider = net::FabricProvider::kTcp;
  bool verbose = false;
};

class LocalCluster {
 public:
  // Starts the pods, waits until each answers on its socket, then the vmm.
  // Call from a thread that lives as long as the cluster: the pods die with it.
  static Result<std::unique_ptr<LocalCluster>> start(const LocalClusterConfig& config);
  // Stops the vmm (which stops its VMs), then the pods, by process id.
  ~LocalCluster();

  const net::SocketAddress& vmm_address() const { return vmm_address_; }
  const std::vector<net::SocketAddress>& memory_pod_addresses() const { return memory_addresses_; }
  const std::vector<net::SocketAddress>& compute_pod_addresses() const { return compute_addresses_; }
  // The memory pods' processes, for tests that make one fail.
  Subprocess& memory_pod_process(size_t index) { return memory_processes_.at(index); }
  Subprocess& compute_pod_process(size_t index) { return compute_processes_.at(index); }
  // The vmm's process id, for tests that watch its memory.
  pid_t vmm_pid() const { return vmm_process_.pid(); }
  std::string log_path(const std::string& pod) const { return config_.dir + "/" + pod + ".log"; }

 private:
  explicit LocalCluster(LocalClusterConfig config) : config_(std::move(config)) {}
  Result<Subprocess> start_pod(const std::string& name, std::vector<std::string> args,
                               const net::SocketAddress& address);

  LocalClusterConfig config_;
  std::vector<Subprocess> memory_processes_;
  std::vector<Subprocess> compute_processes_;
  Subprocess vmm_process_;
  std::vector<net::SocketAddress> memory_addresses_;
  std::vector<net::SocketAddress> compute_addresses_;
  net::SocketAddress vmm_address_;
};

}  // namespace vmpod::vmm
