#include <vmpod/vmm/local_cluster.h>

#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

namespace vmpod::vmm {

namespace {

constexpr auto kStartTimeout = std::chrono::seconds(20);
constexpr auto kStopGrace = std::chrono::seconds(10);

net::SocketAddress unix_socket(const std::string& path) {
  return net::SocketAddress{net::SocketAddress::Kind::kUnix, path, "", 0};
}

}  // namespace

Result<Subprocess> LocalCluster::start_pod(const std::string& name, std::vector<std::string> args,
                                           const net::SocketAddress& address) {
  args.insert(args.begin(), config_.vmpod_binary);
  if (config_.verbose) args.push_back("--verbose");
  auto process = Subprocess::spawn(args, log_path(name), /*die_with_parent=*/true);
  if (!process) return fail(process.error().context(name));
  auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  while (true) {
    if (!process->running()) {
      return fail(ErrorCode::kUnavailable, name + " exited at start; see " + log_path(name));
    }
    if (net::connect_socket(address, std::chrono::milliseconds(500))) return process;
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(ErrorCode::kUnavailable, name + " did not listen in time; see " + log_path(name));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Result<std::unique_ptr<LocalCluster>> LocalCluster::start(const LocalClusterConfig& config) {
  std::error_code ec;
  std::filesystem::create_directories(config.dir, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot create " + config.dir + ": " + ec.message());
  std::unique_ptr<LocalCluster> cluster(new LocalCluster(config));
  std::string provider(net::fabric_provider_name(config.provider));
  for (unsigned i = 0; i < config.memory_pods; ++i) {
    std::string id = "mem" + std::to_string(i);
    net::SocketAddress address = unix_socket(config.dir + "/" + id + ".sock");
    auto process = cluster->start_pod(id, {"memserver", "--id", id, "--listen", address.to_string(),
                                           "--capacity", std::to_string(config.memory_pod_capacity),
                                           "--provider", provider},
                                      address);
    if (!process) return fail(process.error());
    cluster->memory_processes_.push_back(std::move(*process));
    cluster->memory_addresses_.push_back(address);
  }
  for (unsigned i = 0; i < std::max(config.compute_pods, 1u); ++i) {
    std::string id = "cpu" + std::to_string(i);
    net::SocketAddress address = unix_socket(config.dir + "/" + id + ".sock");
    auto process = cluster->start_pod(
        id, {"cpuserver", "--id", id, "--listen", address.to_string(), "--run-dir", config.dir + "/" + id}, address);
    if (!process) return fail(process.error());
    cluster->compute_processes_.push_back(std::move(*process));
    cluster->compute_addresses_.push_back(address);
  }

  cluster->vmm_address_ = unix_socket(config.dir + "/vmm.sock");
  std::vector<std::string> vmm_args = {"vmm", "--listen", cluster->vmm_address_.to_string(), "--run-dir",
                                       config.dir + "/vmm"};
  for (const auto& address : cluster->compute_addresses_) {
    vmm_args.insert(vmm_args.end(), {"--compute-pod", address.to_string()});
  }
  for (const auto& address : cluster->memory_addresses_) {
    vmm_args.insert(vmm_args.end(), {"--memory-pod", address.to_string()});
  }
  auto vmm = cluster->start_pod("vmm", vmm_args, cluster->vmm_address_);
  if (!vmm) return fail(vmm.error());
  cluster->vmm_process_ = std::move(*vmm);
  return cluster;
}

LocalCluster::~LocalCluster() {
  // The vmm stops its VMs as it exits; the compute pod then unmounts podfs
  // and frees its regions while the memory pods are still up.
  vmm_process_.stop(kStopGrace);
  for (auto& process : compute_processes_) process.stop(kStopGrace);
  for (auto& process : memory_processes_) process.stop(kStopGrace);
}

}  // namespace vmpod::vmm
