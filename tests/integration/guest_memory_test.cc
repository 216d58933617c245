// A guest boots under TCG with its RAM on two memory pods; a program in it
// writes a 64 MiB checksummed pattern; the compute pod's cache is dropped;
// the guest re-reads and verifies every byte, and the memory pods' counters
// show the traffic. Then a memory pod is killed: the vmm reports the VM
// failed with the reason within seconds, and every other daemon stays up.
#include <criterion/criterion.h>

#include <signal.h>

#include <thread>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

uint64_t total_reads(const cpuserver::GuestStats& stats) {
  uint64_t bytes = 0;
  for (const auto& pod : stats.memory_pods) bytes += pod.bytes_read;
  return bytes;
}

uint64_t total_pages(const cpuserver::GuestStats& stats) {
  uint64_t pages = 0;
  for (const auto& pod : stats.memory_pods) pages += pod.pages_held;
  return pages;
}

}  // namespace

Test(guest_memory, pattern_survives_dropped_cache_then_pod_loss_fails_vm, .timeout = 300, .fini = vmpod::testing::stop_all) {
  auto guest = testing::boot_guest("guest-memory", {});

  testing::guest_run(*guest, "vmpod-memcheck --size-mib 64 --seed 7 --wait-file /tmp/go >/tmp/mc.log 2>&1 &");
  testing::guest_wait_for(*guest, "/tmp/mc.log", "MEMCHECK written", 120s);

  auto before = guest->vmm->vm_stats("vm0");
  cr_assert(before.has_value(), "%s", before ? "" : before.error().to_string().c_str());
  cr_assert_eq(before->memory_pods.size(), 2u);
  // 64 MiB of pattern is 16384 pages, all written back to the pods.
  cr_assert_geq(total_pages(*before), 16384u, "memory pods hold %lu pages", total_pages(*before));
  for (const auto& pod : before->memory_pods) cr_assert_gt(pod.writes, 0u, "%s saw no writes", pod.pod_id.c_str());

  auto dropped = guest->vmm->drop_cache("vm0");
  cr_assert(dropped.has_value(), "%s", dropped ? "" : dropped.error().to_string().c_str());
  testing::guest_run(*guest, "touch /tmp/go");
  std::string log = testing::guest_wait_for(*guest, "/tmp/mc.log", "MEMCHECK verified ok", 180s);
  cr_assert(log.find("FAILED") == std::string::npos, "%s", log.c_str());

  auto after = guest->vmm->vm_stats("vm0");
  cr_assert(after.has_value());
  // Every verified byte came back from the pods after the cache was dropped.
  uint64_t read_back = total_reads(*after) - total_reads(*before);
  cr_assert_geq(read_back, 64ull << 20, "only %lu bytes read back from the memory pods", read_back);
  for (const auto& pod : after->memory_pods) cr_assert_gt(pod.reads, 0u, "%s served no reads", pod.pod_id.c_str());

  // Lose a memory pod while the guest runs.
  guest->cluster->memory_pod_process(1).kill(SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  vmm::VmRecord vm;
  while (std::chrono::steady_clock::now() < deadline) {
    auto current = guest->vmm->vm("vm0");
    cr_assert(current.has_value(), "vmm stopped answering: %s", current ? "" : current.error().to_string().c_str());
    vm = *current;
    if (vm.state == vmm::VmState::kFailed) break;
    std::this_thread::sleep_for(100ms);
  }
  cr_assert_eq(vm.state, vmm::VmState::kFailed, "vm is %s after its memory pod died",
               std::string(vmm::vm_state_name(vm.state)).c_str());
  cr_assert(vm.reason.find("mem1") != std::string::npos, "reason does not name the pod: %s", vm.reason.c_str());

  // The rest of the cluster is up and answering.
  auto pods = guest->vmm->pods();
  cr_assert(pods.has_value());
  for (const auto& pod : *pods) {
    cr_assert_eq(pod.healthy, pod.pod_id != "mem1", "%s healthy=%d (%s)", pod.pod_id.c_str(), pod.healthy,
                 pod.reason.c_str());
  }
  auto stopped = guest->vmm->stop_vm("vm0");
  cr_assert(stopped.has_value(), "%s", stopped ? "" : stopped.error().to_string().c_str());
}
