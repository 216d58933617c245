#include <cstdio>

#include <vmpod/base/histogram.h>
#include <vmpod/base/units.h>
#include <vmpod/pods/page_protocol.h>

#include "cli.h"

namespace vmpod::cli {

void print_stats(const std::string& vm, const std::string& compute_pod, const cpuserver::GuestStats& stats) {
  const cpuserver::PodfsStats& p = stats.podfs;
  std::printf("\n%s statistics\n", vm.c_str());
  std::printf("  compute pod %s (podfs): %llu page-ins, %s fetched, %llu answered locally with zeros\n",
              compute_pod.c_str(), static_cast<unsigned long long>(p.reads), format_bytes(p.bytes_read).c_str(),
              static_cast<unsigned long long>(p.zero_reads));
  std::printf("    %llu write-backs, %s written; fault latency p50 %.1f us, p99 %.1f us\n",
              static_cast<unsigned long long>(p.writes), format_bytes(p.bytes_written).c_str(),
              histogram_quantile_us(p.read_latency, 0.50), histogram_quantile_us(p.read_latency, 0.99));
  std::printf("    cache %s of %s, %llu chunks evicted (%s)\n", format_bytes(p.cached_bytes).c_str(),
              p.cache_limit ? format_bytes(p.cache_limit).c_str() : "unbounded",
              static_cast<unsigned long long>(p.evictions), format_bytes(p.bytes_evicted).c_str());
  for (const auto& m : stats.memory_pods) {
    std::printf("  memory pod %s: %llu pages held (%s) in %llu regions and %llu frozen versions; "
                "%llu reads (%s), %llu writes (%s)\n", m.pod_id.c_str(),
                static_cast<unsigned long long>(m.pages_held), format_bytes(m.pages_held * pods::kPageSize).c_str(),
                static_cast<unsigned long long>(m.regions), static_cast<unsigned long long>(m.versions),
                static_cast<unsigned long long>(m.reads), format_bytes(m.bytes_read).c_str(),
                static_cast<unsigned long long>(m.writes), format_bytes(m.bytes_written).c_str());
    std::printf("    service time: read p50 %.1f us p99 %.1f us, write p50 %.1f us p99 %.1f us\n",
                histogram_quantile_us(m.read_latency, 0.50), histogram_quantile_us(m.read_latency, 0.99),
                histogram_quantile_us(m.write_latency, 0.50), histogram_quantile_us(m.write_latency, 0.99));
  }
  std::fflush(stdout);
}

nlohmann::json vm_json(const vmm::VmRecord& vm) {
  return {{"name", vm.name},
          {"state", vm_state_name(vm.state)},
          {"reason", vm.reason},
          {"compute-pod", vm.compute_pod},
          {"memory-pods", vm.memory_pods},
          {"qemu-pid", vm.runtime.qemu_pid},
          {"qmp-endpoint", vm.qmp_endpoint},
          {"hmp-endpoint", vm.hmp_endpoint},
          {"qmp-tcp-endpoint", vm.qmp_tcp_endpoint},
          {"snapshot", vm.snapshot},
          {"serial-socket", vm.runtime.paths.serial_socket},
          {"serial-log", vm.runtime.paths.serial_log},
          {"agent-socket", vm.runtime.paths.agent_socket},
          {"generation-id", vm.guest.generation_id},
          {"mac", vm.guest.mac},
          {"code-disk", vm.guest.code_disk}};
}

}  // namespace vmpod::cli
