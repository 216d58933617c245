#include "vm_hmp.h"

#include <sstream>
#include <vector>

#include <fmt/format.h>

#include <vmpod/base/units.h>

namespace vmpod::vmm {

namespace {

struct InfoCommand {
  std::string_view name;
  std::string_view help;
  std::string (*run)(qapi::Commands&);
};

template <typename T>
std::string error_or(const Result<T>& answer, std::string (*format)(const T&)) {
  if (!answer) return "Error: " + answer.error().message() + "\n";
  return format(*answer);
}

std::string format_latency(const qapi::XVmpodLatency& latency) {
  if (latency.count == 0) return "-";
  return fmt::format("{:.1f}/{:.1f} us", static_cast<double>(latency.p50_ns) / 1000.0,
                     static_cast<double>(latency.p99_ns) / 1000.0);
}

std::string format_pods(const std::vector<qapi::XVmpodPodInfo>& pods) {
  std::string out = fmt::format("{:<12} {:<8} {:<9} {}\n", "pod", "kind", "health", "address");
  for (const auto& pod : pods) {
    out += fmt::format("{:<12} {:<8} {:<9} {}\n", pod.pod_id, qapi::to_string(pod.kind),
                       pod.healthy ? "healthy" : "lost", pod.address);
    if (pod.reason) out += "  " + *pod.reason + "\n";
  }
  return out;
}

std::string format_memory(const std::vector<qapi::XVmpodMemoryTierInfo>& tiers) {
  std::string out = fmt::format("{:<12} {:<12} {:>10} {:>10} {:>10} {:>10}  {}\n", "tier", "pod", "pages", "size",
                                "reads", "writes", "fault p50/p99");
  for (const auto& tier : tiers) {
    out += fmt::format("{:<12} {:<12} {:>10} {:>10} {:>10} {:>10}  {}\n", qapi::to_string(tier.tier), tier.pod_id,
                       tier.pages, format_bytes(tier.bytes), tier.reads, tier.writes,
                       format_latency(tier.fault_latency));
  }
  return out;
}

std::string format_cache(const qapi::XVmpodCacheInfo& cache) {
  return fmt::format(
      "limit: {}\ncached: {}\nmisses: {} ({})\nzero-fills: {}\nevictions: {} ({})\n"
      "write-backs: {} ({})\nio-errors: {}\n",
      cache.limit_bytes == 0 ? std::string("unbounded") : format_bytes(cache.limit_bytes),
      format_bytes(cache.cached_bytes), cache.misses, format_bytes(cache.miss_bytes), cache.zero_fills,
      cache.evictions, format_bytes(cache.evicted_bytes), cache.write_backs, format_bytes(cache.write_back_bytes),
      cache.io_errors);
}

std::string format_vm(const qapi::XVmpodVmInfo& vm) {
  std::string memory;
  for (const auto& pod : vm.memory_pods) memory += (memory.empty() ? "" : ",") + pod;
  std::string out = fmt::format("{}: {}{}\ncompute pod: {}\nmemory pods: {}\nqemu pid: {}\nqmp: {}\n", vm.name,
                                qapi::to_string(vm.state), vm.reason ? " (" + *vm.reason + ")" : "",
                                vm.compute_pod, memory, vm.qemu_pid, vm.qmp_endpoint);
  return out;
}

std::string format_snapshots(const std::vector<qapi::XVmpodSnapshotInfo>& snapshots) {
  std::string out = fmt::format("{:<20} {:<16} {:>10} {:>10} {:>10} {:>6}  {}\n", "snapshot", "vm", "ram", "state",
                                "frozen", "clones", "parent");
  for (const auto& snapshot : snapshots) {
    out += fmt::format("{:<20} {:<16} {:>10} {:>10} {:>10} {:>6}  {}\n", snapshot.name, snapshot.vm,
                       format_bytes(snapshot.ram_bytes), format_bytes(snapshot.device_state_bytes),
                       format_bytes(snapshot.pages * 4096), snapshot.clones, snapshot.parent.value_or("-"));
  }
  return out;
}

const std::vector<InfoCommand>& info_commands() {
  static const std::vector<InfoCommand> commands = {
      {"pods", "show the pods the VM runs on (vmpod)",
       [](qapi::Commands& c) { return error_or(c.x_vmpod_query_pods(), format_pods); }},
      {"memory", "show where the VM's RAM is, per pod and tier (vmpod)",
       [](qapi::Commands& c) { return error_or(c.x_vmpod_query_memory(), format_memory); }},
      {"cache", "show the compute pod's local cache of the VM's RAM (vmpod)",
       [](qapi::Commands& c) { return error_or(c.x_vmpod_query_cache(), format_cache); }},
      {"vm", "show the VM as the vmm knows it (vmpod)",
       [](qapi::Commands& c) { return error_or(c.x_vmpod_query_vm(), format_vm); }},
      // Not `info snapshots`, which is QEMU's own (savevm on its disks).
      {"vmpod-snapshots", "show the vmm's snapshots: device state and frozen RAM (vmpod)",
       [](qapi::Commands& c) { return error_or(c.x_vmpod_query_snapshots(), format_snapshots); }},
  };
  return commands;
}

std::vector<std::string> words(std::string_view line) {
  std::istringstream stream{std::string(line)};
  std::vector<std::string> out;
  for (std::string word; stream >> word;) out.push_back(word);
  return out;
}

const InfoCommand* find_info(const std::vector<std::string>& line) {
  if (line.size() != 2 || line[0] != "info") return nullptr;
  for (const auto& command : info_commands()) {
    if (command.name == line[1]) return &command;
  }
  return nullptr;
}

}  // namespace

HmpLine classify_hmp(std::string_view command_line) {
  auto line = words(command_line);
  if (find_info(line) != nullptr) return HmpLine::kVmpod;
  const bool help = !line.empty() && (line[0] == "help" || line[0] == "?");
  if ((help && line.size() == 1) || (help && line.size() == 2 && line[1] == "info") ||
      (line.size() == 1 && line[0] == "info")) {
    return HmpLine::kHelp;
  }
  return HmpLine::kQemu;
}

std::string run_vmpod_hmp(qapi::Commands& commands, std::string_view command_line) {
  const InfoCommand* command = find_info(words(command_line));
  if (command == nullptr) return "Error: not a vmpod command: " + std::string(command_line) + "\n";
  return command->run(commands);
}

std::string vmpod_hmp_help() {
  std::string out;
  for (const auto& command : info_commands()) out += fmt::format("info {} -- {}\n", command.name, command.help);
  return out;
}

}  // namespace vmpod::vmm
