// Verbs that act on VMs of a running vmm: ls, stop, restart, stats,
// drop-cache, exec. The monitor verbs (qmp, hmp, events) are in monitor_verbs.cc.
#include <cstdio>

#include <nlohmann/json.hpp>

#include <vmpod/cpuserver/guest_agent.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

struct VmFlags {
  std::string vmm;
  std::string vm;
  bool json = false;
  std::string command;
  unsigned timeout = 600;
};

Result<std::unique_ptr<vmm::VmmClient>> connect(const VmFlags& flags) { return connect_vmm(flags.vmm); }

ExitCode list(const VmFlags& flags) {
  auto client = connect(flags);
  if (!client) return report(client.error());
  auto vms = (*client)->vms();
  if (!vms) return report(vms.error());
  if (flags.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& vm : *vms) out.push_back(vm_json(vm));
    std::printf("%s\n", out.dump(2).c_str());
    return ExitCode::kOk;
  }
  std::printf("%-16s %-10s %-8s %-20s %s\n", "NAME", "STATE", "COMPUTE", "MEMORY", "QMP");
  for (const auto& vm : *vms) {
    std::string memory;
    for (const auto& pod : vm.memory_pods) memory += (memory.empty() ? "" : ",") + pod;
    std::printf("%-16s %-10s %-8s %-20s %s\n", vm.name.c_str(), std::string(vm_state_name(vm.state)).c_str(),
                vm.compute_pod.c_str(), memory.c_str(), vm.qmp_endpoint.c_str());
    if (!vm.qmp_tcp_endpoint.empty()) std::printf("  qmp also on %s\n", vm.qmp_tcp_endpoint.c_str());
    if (!vm.reason.empty()) std::printf("  %s\n", vm.reason.c_str());
  }
  return ExitCode::kOk;
}

ExitCode stats(const VmFlags& flags) {
  auto client = connect(flags);
  if (!client) return report(client.error());
  auto vm = (*client)->vm(flags.vm);
  if (!vm) return report(vm.error());
  auto stats = (*client)->vm_stats(flags.vm);
  if (!stats) return report(stats.error());
  print_stats(vm->name, vm->compute_pod, *stats);
  return ExitCode::kOk;
}

ExitCode exec(const VmFlags& flags, Outcome& outcome) {
  auto client = connect(flags);
  if (!client) return report(client.error());
  auto vm = (*client)->vm(flags.vm);
  if (!vm) return report(vm.error());
  auto agent = cpuserver::GuestAgent::connect(vm->runtime.paths.agent_socket, std::chrono::seconds(flags.timeout));
  if (!agent) return report(agent.error()), ExitCode::kVmpodFailed;
  auto result = (*agent)->run(flags.command, std::chrono::seconds(flags.timeout));
  if (!result) return report(result.error()), ExitCode::kVmpodFailed;
  std::fwrite(result->output.data(), 1, result->output.size(), stdout);
  outcome.guest_exit = result->exit_code;
  return ExitCode::kOk;
}

CLI::App* vm_verb(CLI::App& app, const char* name, const char* help, std::shared_ptr<VmFlags> flags) {
  auto* cmd = app.add_subcommand(name, help);
  cmd->add_option("--vmm", flags->vmm, "vmm control socket (default $VMPOD_VMM or unix:/run/vmpod/vmm.sock)");
  return cmd;
}

}  // namespace

void add_vm_verbs(CLI::App& app, Outcome& outcome) {
  add_monitor_verbs(app, outcome);
  add_snapshot_verbs(app, outcome);

  auto ls_flags = std::make_shared<VmFlags>();
  auto* ls = vm_verb(app, "ls", "List VMs with their state, pods and QMP socket", ls_flags);
  ls->add_flag("--json", ls_flags->json, "JSON for scripts");
  ls->callback([ls_flags, &outcome] { outcome.code = list(*ls_flags); });

  auto stop_flags = std::make_shared<VmFlags>();
  auto* stop = vm_verb(app, "stop", "Stop a VM: QEMU ends, its regions are freed", stop_flags);
  stop->add_option("vm", stop_flags->vm, "VM name")->required();
  stop->callback([stop_flags, &outcome] {
    auto client = connect(*stop_flags);
    if (!client) return void(outcome.code = report(client.error()));
    auto stopped = (*client)->stop_vm(stop_flags->vm);
    if (!stopped) outcome.code = report(stopped.error());
  });

  auto rm_flags = std::make_shared<VmFlags>();
  auto rm_names = std::make_shared<std::vector<std::string>>();
  auto rm_force = std::make_shared<bool>(false);
  auto* rm = vm_verb(app, "rm", "Remove stopped VMs: their QMP and HMP endpoints close, their names are free",
                     rm_flags);
  rm->add_option("vm", *rm_names, "VM names")->required();
  rm->add_flag("-f,--force", *rm_force, "stop a VM that runs first");
  rm->callback([rm_flags, rm_names, rm_force, &outcome] {
    auto client = connect(*rm_flags);
    if (!client) return void(outcome.code = report(client.error()));
    // Each VM on its own: one that cannot go does not keep the rest.
    for (const std::string& name : *rm_names) {
      Status removed = *rm_force ? (*client)->stop_vm(name) : Status{};
      if (removed) removed = (*client)->remove_vm(name);
      if (!removed) outcome.code = report(removed.error());
    }
  });

  auto stats_flags = std::make_shared<VmFlags>();
  auto* stats_cmd = vm_verb(app, "stats", "Per-pod statistics of a VM", stats_flags);
  stats_cmd->add_option("vm", stats_flags->vm, "VM name")->required();
  stats_cmd->callback([stats_flags, &outcome] { outcome.code = stats(*stats_flags); });

  auto drop_flags = std::make_shared<VmFlags>();
  auto* drop = vm_verb(app, "drop-cache", "Write back and drop a VM's RAM cached on its compute pod", drop_flags);
  drop->add_option("vm", drop_flags->vm, "VM name")->required();
  drop->callback([drop_flags, &outcome] {
    auto client = connect(*drop_flags);
    if (!client) return void(outcome.code = report(client.error()));
    auto dropped = (*client)->drop_cache(drop_flags->vm);
    if (!dropped) outcome.code = report(dropped.error());
  });

  auto restart_flags = std::make_shared<VmFlags>();
  auto* restart = vm_verb(app, "restart", "Start a fresh QEMU for a VM on the same pods; its QMP endpoint stays",
                          restart_flags);
  restart->add_option("vm", restart_flags->vm, "VM name")->required();
  restart->callback([restart_flags, &outcome] {
    auto client = connect(*restart_flags);
    if (!client) return void(outcome.code = report(client.error()));
    auto restarted = (*client)->restart_vm(restart_flags->vm);
    if (!restarted) outcome.code = report(restarted.error());
  });

  auto migrate_flags = std::make_shared<VmFlags>();
  auto* migrate = vm_verb(app, "migrate", "Move a VM to another compute pod; its RAM stays in the memory pods",
                          migrate_flags);
  migrate->add_option("vm", migrate_flags->vm, "VM name")->required();
  migrate->add_option("--to", migrate_flags->command, "destination compute pod")->required();
  migrate->callback([migrate_flags, &outcome] {
    auto client = connect(*migrate_flags);
    if (!client) return void(outcome.code = report(client.error()));
    auto migrated = (*client)->migrate_vm(migrate_flags->vm, migrate_flags->command);
    if (!migrated) return void(outcome.code = report(migrated.error()));
    std::printf("%s runs on %s (downtime %.1f ms, total %.1f ms)\n", migrated->vm.name.c_str(),
                migrated->vm.compute_pod.c_str(), static_cast<double>(migrated->downtime.count()) / 1000.0,
                static_cast<double>(migrated->total.count()) / 1000.0);
  });

  auto exec_flags = std::make_shared<VmFlags>();
  auto* exec_cmd = vm_verb(app, "exec", "Run a shell command in a VM through its guest agent", exec_flags);
  exec_cmd->add_option("vm", exec_flags->vm, "VM name")->required();
  exec_cmd->add_option("command", exec_flags->command, "shell command")->required();
  exec_cmd->add_option("--timeout", exec_flags->timeout, "seconds")->capture_default_str();
  exec_cmd->callback([exec_flags, &outcome] { outcome.code = exec(*exec_flags, outcome); });
}

}  // namespace vmpod::cli
