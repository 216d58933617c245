// Verbs for snapshots and their copy-on-write clones: snapshot, snapshots,
// snapshot-delete, fork.
#include <cstdio>
#include <ctime>

#include <vmpod/base/units.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

struct SnapshotFlags {
  std::string vmm;
  std::string vm;
  std::string snapshot;
  bool paused = false;
  bool json = false;
  vmm::ForkRequest fork;
};

nlohmann::json snapshot_json(const vmm::SnapshotRecord& snapshot) {
  return {{"name", snapshot.name},
          {"vm", snapshot.vm},
          {"parent", snapshot.parent},
          {"device-state-bytes", snapshot.device_state_bytes},
          {"ram-bytes", snapshot.ram_bytes},
          {"pages", snapshot.pages},
          {"memory-pods", snapshot.memory_pods},
          {"created", snapshot.created_unix_ms},
          {"clones", snapshot.clones},
          {"working-set-bytes", snapshot.working_set_bytes}};
}

std::string local_time(int64_t unix_ms) {
  std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

void print_snapshots(const std::vector<vmm::SnapshotRecord>& snapshots) {
  std::printf("%-20s %-16s %-19s %9s %9s %9s %6s  %s\n", "NAME", "VM", "CREATED", "RAM", "STATE", "FROZEN",
              "CLONES", "PARENT");
  for (const auto& s : snapshots) {
    std::printf("%-20s %-16s %-19s %9s %9s %9s %6u  %s\n", s.name.c_str(), s.vm.c_str(),
                local_time(s.created_unix_ms).c_str(), format_bytes(s.ram_bytes).c_str(),
                format_bytes(s.device_state_bytes).c_str(), format_bytes(s.pages * 4096).c_str(), s.clones,
                s.parent.empty() ? "-" : s.parent.c_str());
  }
}

ExitCode take(const SnapshotFlags& flags) {
  auto client = connect_vmm(flags.vmm);
  if (!client) return report(client.error());
  auto taken = (*client)->snapshot_vm(flags.vm, flags.snapshot, flags.paused);
  if (!taken) return report(taken.error());
  if (flags.json) {
    std::printf("%s\n", snapshot_json(*taken).dump(2).c_str());
  } else {
    std::printf("snapshot %s of %s: %s of device state, %s of RAM frozen on %zu memory pods\n", taken->name.c_str(),
                taken->vm.c_str(), format_bytes(taken->device_state_bytes).c_str(),
                format_bytes(taken->pages * 4096).c_str(), taken->memory_pods.size());
  }
  return ExitCode::kOk;
}

ExitCode list(const SnapshotFlags& flags) {
  auto client = connect_vmm(flags.vmm);
  if (!client) return report(client.error());
  auto snapshots = (*client)->snapshots();
  if (!snapshots) return report(snapshots.error());
  if (!flags.snapshot.empty()) {
    std::erase_if(*snapshots, [&](const auto& s) { return s.name != flags.snapshot; });
    if (snapshots->empty()) return report(Error(ErrorCode::kNotFound, "no snapshot named '" + flags.snapshot + "'"));
  }
  if (flags.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& snapshot : *snapshots) out.push_back(snapshot_json(snapshot));
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    print_snapshots(*snapshots);
  }
  return ExitCode::kOk;
}

ExitCode fork(const SnapshotFlags& flags) {
  auto client = connect_vmm(flags.vmm);
  if (!client) return report(client.error());
  auto clones = (*client)->fork_snapshot(flags.fork);
  if (!clones) return report(clones.error());
  if (flags.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& clone : *clones) out.push_back(vm_json(clone));
    std::printf("%s\n", out.dump(2).c_str());
    return ExitCode::kOk;
  }
  for (const auto& clone : *clones) {
    std::printf("%s %s on %s, qmp %s\n", clone.name.c_str(), std::string(vm_state_name(clone.state)).c_str(),
                clone.compute_pod.c_str(), clone.qmp_endpoint.c_str());
  }
  return ExitCode::kOk;
}

CLI::App* snapshot_verb(CLI::App& app, const char* name, const char* help, std::shared_ptr<SnapshotFlags> flags) {
  auto* cmd = app.add_subcommand(name, help);
  cmd->add_option("--vmm", flags->vmm, "vmm control socket (default $VMPOD_VMM or unix:/run/vmpod/vmm.sock)");
  cmd->add_flag("--json", flags->json, "JSON for scripts");
  return cmd;
}

}  // namespace

void add_snapshot_verbs(CLI::App& app, Outcome& outcome) {
  auto take_flags = std::make_shared<SnapshotFlags>();
  auto* take_cmd = snapshot_verb(
      app, "snapshot", "Snapshot a VM: its device state, and its RAM frozen copy-on-write in the memory pods", take_flags);
  take_cmd->add_option("vm", take_flags->vm, "VM name")->required();
  take_cmd->add_option("name", take_flags->snapshot, "snapshot name, unique in the vmm")->required();
  take_cmd->add_flag("--paused", take_flags->paused, "leave the VM paused afterwards");
  take_cmd->callback([take_flags, &outcome] { outcome.code = take(*take_flags); });

  auto list_flags = std::make_shared<SnapshotFlags>();
  auto* list_cmd = snapshot_verb(app, "snapshots", "List snapshots, or describe one", list_flags);
  list_cmd->add_option("name", list_flags->snapshot, "only this snapshot");
  list_cmd->callback([list_flags, &outcome] { outcome.code = list(*list_flags); });

  auto delete_flags = std::make_shared<SnapshotFlags>();
  auto* delete_cmd = snapshot_verb(app, "snapshot-delete", "Delete a snapshot; its clones run on", delete_flags);
  delete_cmd->add_option("name", delete_flags->snapshot, "snapshot name")->required();
  delete_cmd->callback([delete_flags, &outcome] {
    auto client = connect_vmm(delete_flags->vmm);
    if (!client) return void(outcome.code = report(client.error()));
    auto deleted = (*client)->delete_snapshot(delete_flags->snapshot);
    if (!deleted) outcome.code = report(deleted.error());
  });

  auto fork_flags = std::make_shared<SnapshotFlags>();
  auto* fork_cmd = snapshot_verb(app, "fork", "Start copy-on-write clones of a snapshot, each a full VM", fork_flags);
  fork_cmd->add_option("snapshot", fork_flags->fork.snapshot, "snapshot name")->required();
  fork_cmd->add_option("-n,--count", fork_flags->fork.count, "how many clones")->capture_default_str();
  fork_cmd->add_option("--name-prefix", fork_flags->fork.name_prefix,
                       "clones are PREFIX-N, lowest free N first (default: the snapshot's name)");
  fork_cmd->add_option("--compute-pod", fork_flags->fork.compute_pod, "run them there (default: least loaded)");
  fork_cmd->add_flag("--paused", fork_flags->fork.paused, "the clones wait for cont");
  fork_cmd->add_option("--code-disk", fork_flags->fork.code_disk,
                       "give the clones this raw image as their code disk instead of the snapshot's");
  fork_cmd->add_flag("!--no-prefetch", fork_flags->fork.prefetch,
                     "do not fetch the snapshot's working set ahead of the clones");
  fork_cmd->callback([fork_flags, &outcome] { outcome.code = fork(*fork_flags); });
}

}  // namespace vmpod::cli
