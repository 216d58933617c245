// The daemon verbs: each parses flags, starts its library's server, and
// serves until SIGINT or SIGTERM.
#include <cstdio>

#include <vmpod/base/units.h>
#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/memserver/memserver.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

#include <spdlog/spdlog.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

struct MemserverFlags {
  std::string id = "mem0";
  std::string listen = "unix:/run/vmpod/mem0.sock";
  std::string capacity = "4G";
  std::string provider = "tcp";
  std::string fabric_node = "127.0.0.1";
  bool verbose = false;
};

struct CpuserverFlags {
  std::string id = "cpu0";
  std::string listen = "unix:/run/vmpod/cpu0.sock";
  std::string run_dir;
  std::string qemu = "qemu-system-x86_64";
  bool verbose = false;
};

struct ClusterFlags {
  std::string dir = "/run/vmpod/cluster";
  unsigned memory_pods = 2;
  unsigned compute_pods = 1;
  std::string pod_capacity = "4G";
  std::string provider = "tcp";
  bool verbose = false;
};

struct VmmFlags {
  std::string listen = "unix:/run/vmpod/vmm.sock";
  std::string run_dir = "/run/vmpod/vmm";
  std::vector<std::string> memory_pods;
  std::vector<std::string> compute_pods;
  bool verbose = false;
};

Result<std::unique_ptr<memserver::Memserver>> start_memserver(const MemserverFlags& flags) {
  memserver::MemserverConfig config;
  config.pod_id = flags.id;
  auto listen = net::parse_socket_address(flags.listen);
  if (!listen) return fail(listen.error());
  config.control = *listen;
  auto capacity = parse_size(flags.capacity);
  if (!capacity) return fail(capacity.error().context("--capacity"));
  config.capacity_bytes = *capacity;
  auto provider = net::parse_fabric_provider(flags.provider);
  if (!provider) return fail(provider.error());
  config.fabric.provider = *provider;
  config.fabric.node = flags.fabric_node;
  return memserver::Memserver::start(config);
}

Result<std::unique_ptr<cpuserver::ComputePod>> start_cpuserver(const CpuserverFlags& flags) {
  cpuserver::ComputePodConfig config;
  config.pod_id = flags.id;
  auto listen = net::parse_socket_address(flags.listen);
  if (!listen) return fail(listen.error());
  config.control = *listen;
  config.run_dir = flags.run_dir.empty() ? "/run/vmpod/" + flags.id : flags.run_dir;
  config.qemu_binary = flags.qemu;
  return cpuserver::ComputePod::start(config);
}

Result<std::unique_ptr<vmm::Vmm>> start_vmm(const VmmFlags& flags) {
  vmm::VmmConfig config;
  auto listen = net::parse_socket_address(flags.listen);
  if (!listen) return fail(listen.error());
  config.control = *listen;
  config.run_dir = flags.run_dir;
  for (auto [addresses, kind] : {std::pair{&flags.memory_pods, vmm::PodKind::kMemory},
                                 std::pair{&flags.compute_pods, vmm::PodKind::kCompute}}) {
    for (const auto& text : *addresses) {
      auto address = net::parse_socket_address(text);
      if (!address) return fail(address.error());
      vmm::PodRecord pod;
      pod.kind = kind;
      pod.control = *address;
      config.pods.push_back(pod);
    }
  }
  return vmm::Vmm::start(config);
}

// A whole cluster on this machine that lasts until a stop signal, so that
// snapshots (a stress plan's base, its failures) outlive one command.
Result<std::unique_ptr<vmm::LocalCluster>> start_cluster(const ClusterFlags& flags) {
  auto config = local_cluster_config(flags.dir, flags.memory_pods, flags.pod_capacity, flags.verbose);
  if (!config) return fail(config.error());
  config->compute_pods = flags.compute_pods;
  auto provider = net::parse_fabric_provider(flags.provider);
  if (!provider) return fail(provider.error());
  config->provider = *provider;
  auto cluster = vmm::LocalCluster::start(*config);
  if (!cluster) return fail(cluster.error());
  std::printf("vmm %s\nexport VMPOD_VMM=%s\n", (*cluster)->vmm_address().to_string().c_str(),
              (*cluster)->vmm_address().to_string().c_str());
  std::fflush(stdout);
  return cluster;
}

}  // namespace

void add_daemon_verbs(CLI::App& app, Outcome& outcome) {
  auto memserver_flags = std::make_shared<MemserverFlags>();
  auto* mem = app.add_subcommand("memserver", "Run a memory pod: guest RAM pages served over the fabric");
  mem->add_option("--id", memserver_flags->id, "pod id")->capture_default_str();
  mem->add_option("--listen", memserver_flags->listen, "control socket (unix:PATH or tcp:HOST:PORT)")
      ->capture_default_str();
  mem->add_option("--capacity", memserver_flags->capacity, "DRAM held for pages (K, M, G)")->capture_default_str();
  mem->add_option("--provider", memserver_flags->provider, "fabric provider: tcp, shm, verbs")->capture_default_str();
  mem->add_option("--fabric-node", memserver_flags->fabric_node, "address the fabric endpoint binds")
      ->capture_default_str();
  mem->add_flag("-v,--verbose", memserver_flags->verbose, "debug logging");
  mem->callback([memserver_flags, &outcome] {
    outcome.code = serve(memserver_flags->id, memserver_flags->verbose,
                         [&] { return start_memserver(*memserver_flags); });
  });

  auto cpu_flags = std::make_shared<CpuserverFlags>();
  auto* cpu = app.add_subcommand("cpuserver", "Run a compute pod: QEMU guests with RAM on podfs");
  cpu->add_option("--id", cpu_flags->id, "pod id")->capture_default_str();
  cpu->add_option("--listen", cpu_flags->listen, "control socket")->capture_default_str();
  cpu->add_option("--run-dir", cpu_flags->run_dir, "guests' sockets, logs and podfs mounts (default /run/vmpod/ID)");
  cpu->add_option("--qemu", cpu_flags->qemu, "QEMU binary")->capture_default_str();
  cpu->add_flag("-v,--verbose", cpu_flags->verbose, "debug logging");
  cpu->callback([cpu_flags, &outcome] {
    outcome.code = serve(cpu_flags->id, cpu_flags->verbose, [&] { return start_cpuserver(*cpu_flags); });
  });

  auto vmm_flags = std::make_shared<VmmFlags>();
  auto* vmm_cmd = app.add_subcommand("vmm", "Run the vmm: composes VMs from compute and memory pods");
  vmm_cmd->add_option("--listen", vmm_flags->listen, "control socket")->capture_default_str();
  vmm_cmd->add_option("--run-dir", vmm_flags->run_dir, "the VMs' QMP endpoint sockets")->capture_default_str();
  vmm_cmd->add_option("--memory-pod", vmm_flags->memory_pods, "a memory pod's control socket (repeat)");
  vmm_cmd->add_option("--compute-pod", vmm_flags->compute_pods, "a compute pod's control socket (repeat)");
  vmm_cmd->add_flag("-v,--verbose", vmm_flags->verbose, "debug logging");
  vmm_cmd->callback([vmm_flags, &outcome] {
    outcome.code = serve("vmm", vmm_flags->verbose, [&] { return start_vmm(*vmm_flags); });
  });

  auto cluster_flags = std::make_shared<ClusterFlags>();
  auto* cluster = app.add_subcommand("cluster", "Run memory pods, compute pods and a vmm on this machine "
                                                "until Ctrl-C; prints the vmm's address");
  cluster->add_option("--dir", cluster_flags->dir, "sockets, logs and guest run directories")->capture_default_str();
  cluster->add_option("--memory-pods", cluster_flags->memory_pods, "memory pods")->capture_default_str();
  cluster->add_option("--compute-pods", cluster_flags->compute_pods, "compute pods")->capture_default_str();
  cluster->add_option("--pod-capacity", cluster_flags->pod_capacity, "DRAM of each memory pod")->capture_default_str();
  cluster->add_option("--provider", cluster_flags->provider, "fabric provider: tcp, shm, verbs")->capture_default_str();
  cluster->add_flag("-v,--verbose", cluster_flags->verbose, "debug logging in the pods");
  cluster->callback([cluster_flags, &outcome] {
    outcome.code = serve("cluster", cluster_flags->verbose, [&] { return start_cluster(*cluster_flags); });
  });
}

}  // namespace vmpod::cli
