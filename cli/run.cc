// `vmpod run`: boot a guest whose RAM lives in memory pods. With no vmm
// given it starts a whole cluster on this machine (two memory pods, a
// compute pod, a vmm), attaches the guest's console to the terminal, and on
// exit prints every pod's statistics and stops all it started.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include <vmpod/base/subprocess.h>
#include <vmpod/base/units.h>
#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/vmm/local_cluster.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

struct RunFlags {
  std::string name = "vm0";
  std::string memory = "256M";
  unsigned cpus = 1;
  std::string machine = "q35";
  std::string accel = "auto";
  std::string kernel;
  std::string initrd;
  std::string append;
  unsigned memory_pods = 2;
  std::string stripe = "1M";
  std::string local_cache = "0";
  std::string provider = "tcp";
  std::string qmp_tcp;
  std::string pod_capacity;
  std::string command;
  unsigned command_timeout = 600;
  std::string vmm;
  std::string dir;
  bool verbose = false;
};

Result<vmm::VmRequest> vm_request(const RunFlags& flags) {
  vmm::VmRequest request;
  cpuserver::GuestSpec& guest = request.guest;
  guest.name = flags.name;
  auto memory = parse_size(flags.memory);
  if (!memory) return fail(memory.error().context("--memory"));
  guest.memory_bytes = *memory;
  guest.cpus = flags.cpus;
  guest.machine = flags.machine;
  auto accel = cpuserver::parse_accel(flags.accel);
  if (!accel) return fail(accel.error());
  guest.accel = *accel;
  std::string images = default_image_dir();
  guest.kernel = flags.kernel.empty() ? images + "/vmlinux" : flags.kernel;
  guest.initrd = flags.initrd.empty() ? images + "/initramfs.cpio.gz" : flags.initrd;
  for (const auto& file : {guest.kernel, guest.initrd}) {
    if (!std::filesystem::exists(file)) {
      return fail(ErrorCode::kInvalidArgument, file + " does not exist: build the guest image (ninja -C build) "
                                                      "or pass --kernel and --initrd");
    }
  }
  guest.append = std::string(cpuserver::kGuestImageAppend) + (flags.append.empty() ? "" : " " + flags.append);
  request.memory_pod_count = flags.memory_pods;
  auto stripe = parse_size(flags.stripe);
  if (!stripe) return fail(stripe.error().context("--stripe"));
  request.stripe_bytes = *stripe;
  auto cache = parse_size(flags.local_cache);
  if (!cache) return fail(cache.error().context("--local-cache"));
  request.local_cache_bytes = *cache;
  auto provider = net::parse_fabric_provider(flags.provider);
  if (!provider) return fail(provider.error());
  request.provider = *provider;
  request.qmp_tcp = flags.qmp_tcp;
  return request;
}


bool vm_running(vmm::VmmClient& client, const std::string& name, std::string& reason, bool& failed) {
  auto vm = client.vm(name);
  if (!vm) {
    reason = vm.error().message();
    failed = true;
    return false;
  }
  failed = vm->state == vmm::VmState::kFailed;
  reason = vm->reason;
  return vmm::vm_is_live(vm->state);
}

// Copies between the terminal and one QEMU's console until that console
// closes or the VM stops running. Returns true on a stop signal.
bool relay_console(vmm::VmmClient& client, const std::string& name, int console, SignalFd& signals,
                   bool& stdin_open) {
  auto next_check = std::chrono::steady_clock::now();
  while (true) {
    pollfd fds[3] = {{signals.fd(), POLLIN, 0}, {console, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
    int ready = ::poll(fds, stdin_open ? 3 : 2, 200);
    if (ready > 0 && (fds[0].revents & POLLIN) && signals.fired()) return true;
    char buffer[4096];
    if (ready > 0 && (fds[1].revents & (POLLIN | POLLHUP))) {
      ssize_t got = ::read(console, buffer, sizeof(buffer));
      if (got <= 0) return false;
      if (::write(STDOUT_FILENO, buffer, static_cast<size_t>(got)) < 0) return false;
    }
    if (stdin_open && ready > 0 && (fds[2].revents & (POLLIN | POLLHUP))) {
      ssize_t got = ::read(STDIN_FILENO, buffer, sizeof(buffer));
      if (got <= 0) stdin_open = false;
      else if (::write(console, buffer, static_cast<size_t>(got)) < 0) return false;
    }
    if (std::chrono::steady_clock::now() >= next_check) {
      std::string reason;
      bool failed = false;
      if (!vm_running(client, name, reason, failed)) return false;
      next_check = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    }
  }
}

// Relays the terminal and the guest's serial console until the guest ends
// or a stop signal arrives; follows the VM to a new QEMU when it is
// restarted. Returns true when interrupted.
bool attach_console(vmm::VmmClient& client, const std::string& name, SignalFd& signals) {
  bool stdin_open = true;
  while (true) {
    auto vm = client.vm(name);
    if (!vm) return false;
    if (!vmm::vm_is_live(vm->state)) return false;
    // Starting, snapshotting or migrating: which QEMU's console to attach
    // to is known once it settles.
    if (!vmm::vm_has_qemu(vm->state)) {
      pollfd pfd{signals.fd(), POLLIN, 0};
      if (::poll(&pfd, 1, 200) > 0 && signals.fired()) return true;
      continue;
    }
    net::SocketAddress serial{net::SocketAddress::Kind::kUnix, vm->runtime.paths.serial_socket, "", 0};
    auto console = net::connect_socket(serial, std::chrono::seconds(5));
    if (!console) {
      spdlog::warn("console: {}", console.error().to_string());
      return false;
    }
    if (relay_console(client, name, console->get(), signals, stdin_open)) return true;
  }
}

// Runs one command through the guest agent while watching for a stop
// signal; a signal stops the VM, which ends the agent's wait.
bool run_guest_command(vmm::VmmClient& client, const vmm::VmRecord& vm, const RunFlags& flags,
                       SignalFd& signals, Outcome& outcome) {
  std::atomic<bool> done{false};
  Result<cpuserver::GuestCommandResult> result = fail(ErrorCode::kInternal, "not run");
  std::thread worker([&] {
    auto timeout = std::chrono::seconds(flags.command_timeout);
    auto agent = cpuserver::GuestAgent::connect(vm.runtime.paths.agent_socket, timeout);
    if (!agent) result = fail(agent.error());
    else result = (*agent)->run(flags.command, timeout);
    done = true;
  });
  bool interrupted = false;
  while (!done) {
    pollfd pfd{signals.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 200) > 0 && signals.fired() && !interrupted) {
      interrupted = true;
      auto stopped = client.stop_vm(vm.name);
      if (!stopped) spdlog::warn("stopping {}: {}", vm.name, stopped.error().to_string());
    }
  }
  worker.join();
  if (interrupted) return true;
  if (!result) {
    std::fprintf(stderr, "vmpod: %s\n", result.error().message().c_str());
    outcome.code = ExitCode::kVmpodFailed;
    return false;
  }
  std::fwrite(result->output.data(), 1, result->output.size(), stdout);
  std::fflush(stdout);
  outcome.guest_exit = result->exit_code;
  return false;
}

void run(const RunFlags& flags, Outcome& outcome) {
  block_stop_signals();
  SignalFd signals;
  auto request = vm_request(flags);
  if (!request) {
    outcome.code = report(request.error());
    return;
  }
  std::unique_ptr<vmm::LocalCluster> cluster;
  net::SocketAddress vmm_at;
  std::string dir = flags.dir.empty() ? "/run/vmpod/run-" + std::to_string(::getpid()) : flags.dir;
  if (flags.vmm.empty()) {
    // Each pod can hold the whole guest, so a pod lost is the only way out.
    auto config = local_cluster_config(dir, flags.memory_pods,
                                       flags.pod_capacity.empty() ? flags.memory : flags.pod_capacity, flags.verbose);
    if (!config) {
      outcome.code = report(config.error());
      return;
    }
    config->provider = request->provider;
    std::fprintf(stderr, "vmpod: starting %u memory pods, a compute pod and a vmm in %s\n", flags.memory_pods,
                 dir.c_str());
    auto started = vmm::LocalCluster::start(*config);
    if (!started) {
      outcome.code = report(started.error());
      return;
    }
    cluster = std::move(*started);
    vmm_at = cluster->vmm_address();
  } else {
    auto address = vmm_address(flags.vmm);
    if (!address) {
      outcome.code = report(address.error());
      return;
    }
    vmm_at = *address;
  }
  auto client = vmm::VmmClient::connect(vmm_at, std::chrono::seconds(5));
  if (!client) {
    outcome.code = report(client.error());
    return;
  }
  auto vm = (*client)->create_vm(*request);
  if (!vm) {
    outcome.code = report(vm.error());
    return;
  }
  std::fprintf(stderr, "vmpod: %s running on %s, RAM %s striped over", vm->name.c_str(), vm->compute_pod.c_str(),
               flags.memory.c_str());
  for (const auto& pod : vm->memory_pods) std::fprintf(stderr, " %s", pod.c_str());
  std::fprintf(stderr, " (%s)\nvmpod: QMP %s%s%s, HMP %s; console below%s\n", flags.provider.c_str(),
               vm->qmp_endpoint.c_str(), vm->qmp_tcp_endpoint.empty() ? "" : " and ", vm->qmp_tcp_endpoint.c_str(),
               vm->hmp_endpoint.c_str(), flags.command.empty() ? ", Ctrl-C stops it" : "");

  bool interrupted = flags.command.empty() ? attach_console(**client, vm->name, signals)
                                           : run_guest_command(**client, *vm, flags, signals, outcome);
  std::string reason;
  bool failed = false;
  bool still_running = vm_running(**client, vm->name, reason, failed);
  if (!still_running && failed) {
    std::fprintf(stderr, "\nvmpod: %s failed: %s\n", vm->name.c_str(), reason.c_str());
    outcome.code = ExitCode::kGuestFailed;
  }
  auto stats = (*client)->vm_stats(vm->name);
  if (stats) print_stats(vm->name, vm->compute_pod, *stats);
  else spdlog::warn("statistics: {}", stats.error().to_string());
  auto stopped = (*client)->stop_vm(vm->name);
  if (!stopped) spdlog::warn("stopping {}: {}", vm->name, stopped.error().to_string());
  if (interrupted) outcome.code = ExitCode::kInterrupted;
  client->reset();
  cluster.reset();
  if (flags.vmm.empty()) finish_local_cluster_dir(dir, !flags.dir.empty() || outcome.code != ExitCode::kOk);
}

}  // namespace

void add_run_verb(CLI::App& app, Outcome& outcome) {
  auto flags = std::make_shared<RunFlags>();
  auto* cmd = app.add_subcommand("run", "Boot a guest whose RAM lives in memory pods (a local cluster by default)");
  cmd->add_option("--name", flags->name, "guest name")->capture_default_str();
  cmd->add_option("-m,--memory", flags->memory, "guest RAM")->capture_default_str();
  cmd->add_option("--cpus", flags->cpus, "vCPUs")->capture_default_str();
  cmd->add_option("--machine", flags->machine, "QEMU machine type")->capture_default_str();
  cmd->add_option("--accel", flags->accel, "tcg, kvm, or auto (KVM only where it can run a full guest)")
      ->capture_default_str();
  cmd->add_option("--kernel", flags->kernel, "guest kernel (default: the built guest image)");
  cmd->add_option("--initrd", flags->initrd, "guest initramfs (default: the built guest image)");
  cmd->add_option("--append", flags->append, "extra kernel parameters");
  cmd->add_option("--memory-pods", flags->memory_pods, "memory pods the RAM is striped over")->capture_default_str();
  cmd->add_option("--stripe", flags->stripe, "stripe size")->capture_default_str();
  cmd->add_option("--local-cache", flags->local_cache, "most guest RAM cached on the compute pod (0: no bound)")
      ->capture_default_str();
  cmd->add_option("--provider", flags->provider, "fabric provider: tcp, shm, verbs")->capture_default_str();
  cmd->add_option("--qmp-tcp", flags->qmp_tcp, "also serve the VM's QMP on HOST:PORT (port 0: any free port)");
  cmd->add_option("--pod-capacity", flags->pod_capacity, "DRAM of each local memory pod (default: guest RAM)");
  cmd->add_option("-c,--command", flags->command, "run this in the guest through its agent, print its output, "
                                                 "exit with its code");
  cmd->add_option("--command-timeout", flags->command_timeout, "seconds to wait for --command")->capture_default_str();
  cmd->add_option("--vmm", flags->vmm, "use this vmm instead of starting a local cluster");
  cmd->add_option("--dir", flags->dir, "where a local cluster keeps sockets and logs");
  cmd->add_flag("-v,--verbose", flags->verbose, "debug logging in the pods");
  cmd->callback([flags, &outcome] { run(*flags, outcome); });
}

}  // namespace vmpod::cli
