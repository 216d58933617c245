// Snapshots and copy-on-write forks of one booted guest. A memcheck waits,
// its pattern written, while the guest is snapshotted; every clone finds
// that pattern, then writes and verifies its own (with its cache dropped,
// so the bytes come from the memory pods); a clone forked after them all
// still finds the snapshot unchanged, and has the working set the first
// clone recorded fetched ahead of it. A snapshot of a clone restores too.
// Deleting the snapshots and stopping the clones gives every page back;
// removing the stopped clones closes their endpoints.
#include <criterion/criterion.h>

#include <filesystem>
#include <iterator>
#include <set>
#include <thread>

#include <vmpod/qmp/qmp_client.h>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

constexpr int kClones = 4;
// The vmm's working-set window (kWorkingSetWindow, 5 s) with a margin.
constexpr auto kRecordingWindow = std::chrono::seconds(6);

std::string memcheck(int size_mib, int seed, const std::string& wait_file, const std::string& out) {
  return "vmpod-memcheck --size-mib " + std::to_string(size_mib) + " --seed " + std::to_string(seed) +
         " --wait-file " + wait_file + " >" + out + " 2>&1 &";
}

void expect_verified(testing::BootedGuest& guest, const std::string& out) {
  std::string log = testing::guest_wait_for(guest, out, "MEMCHECK verified", 180s);
  cr_expect(log.find("MEMCHECK verified ok") != std::string::npos && log.find("FAILED") == std::string::npos,
            "%s: %s", guest.vm.name.c_str(), log.c_str());
}

std::vector<vmm::VmRecord> fork(vmm::VmmClient& vmm, const std::string& snapshot, unsigned count) {
  vmm::ForkRequest request;
  request.snapshot = snapshot;
  request.count = count;
  auto clones = vmm.fork_snapshot(request);
  cr_assert(clones.has_value(), "fork %s: %s", snapshot.c_str(), clones ? "" : clones.error().to_string().c_str());
  cr_assert_eq(clones->size(), count);
  for (const auto& clone : *clones) {
    cr_expect_eq(clone.state, vmm::VmState::kRunning, "%s: %s", clone.name.c_str(), clone.reason.c_str());
    cr_expect_eq(clone.snapshot, snapshot);
  }
  return *clones;
}

struct PodPages {
  uint64_t held = 0;     // every page the memory pods hold
  uint64_t regions = 0;  // held by vm0's own regions
  uint64_t versions = 0;
};

PodPages pod_pages(vmm::VmmClient& vmm) {
  auto stats = vmm.vm_stats("vm0");
  cr_assert(stats.has_value(), "%s", stats ? "" : stats.error().to_string().c_str());
  PodPages pages;
  for (const auto& pod : stats->memory_pods) {
    pages.held += pod.pages_held;
    pages.regions += pod.region_pages;
    pages.versions += pod.versions;
  }
  return pages;
}

// Threads of a process, from /proc/PID/task.
size_t thread_count(pid_t pid) {
  auto entries = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task");
  return static_cast<size_t>(std::distance(std::filesystem::begin(entries), std::filesystem::end(entries)));
}

}  // namespace

Test(snapshot_fork, clones_share_the_snapshot_and_keep_their_own_writes, .timeout = 600,
     .fini = vmpod::testing::stop_all) {
  testing::GuestOptions options;
  options.pod_capacity_bytes = 1ull << 30;
  options.identity = true;
  auto base = testing::boot_guest("snapshot-fork", options);
  vmm::VmmClient& vmm = *base->vmm;

  testing::guest_run(*base, memcheck(32, 1, "/tmp/go", "/tmp/base.out"));
  testing::guest_wait_for(*base, "/tmp/base.out", "MEMCHECK written", 120s);
  auto taken = vmm.snapshot_vm("vm0", "base", false);
  cr_assert(taken.has_value(), "%s", taken ? "" : taken.error().to_string().c_str());
  cr_expect_eq(taken->vm, "vm0");
  cr_expect(taken->parent.empty());
  cr_expect_gt(taken->device_state_bytes, 0u);
  cr_expect_lt(taken->device_state_bytes, 4u << 20, "device state only: %lu bytes", taken->device_state_bytes);
  cr_expect_geq(taken->pages, 8192u, "the 32 MiB pattern is frozen: %lu pages", taken->pages);
  auto again = vmm.snapshot_vm("vm0", "base", false);
  cr_expect(!again.has_value() && again.error().code() == ErrorCode::kAlreadyExists);
  auto vm = vmm.vm("vm0");
  cr_assert(vm.has_value());
  cr_expect_eq(vm->state, vmm::VmState::kRunning, "the base runs on after its snapshot");

  // The base goes on and finds its own pattern.
  testing::guest_run(*base, "touch /tmp/go");
  expect_verified(*base, "/tmp/base.out");

  std::vector<testing::BootedGuest> clones;
  for (const auto& record : fork(vmm, "base", kClones)) clones.push_back(testing::attach_guest(base->cluster, record));
  // base-0 records what it reads for its first kRecordingWindow; the late
  // clone below must come after that to get the recording.
  auto recording_over = std::chrono::steady_clock::now() + kRecordingWindow;
  for (int i = 0; i < kClones; ++i) cr_expect_eq(clones[i].vm.name, "base-" + std::to_string(i));
  // Each clone's memcheck, frozen waiting, finds the snapshot's pattern.
  for (auto& clone : clones) testing::guest_run(clone, "touch /tmp/go");
  for (auto& clone : clones) expect_verified(clone, "/tmp/base.out");

  // Each clone has a generation ID and a MAC of its own, and clones of one
  // snapshot do not draw the same random numbers. (Their kernels also mix
  // interrupt timings in, so the draws would differ here even without the
  // new generation ID; the ID is for guests that reseed on nothing else.)
  std::set<std::string> ids{base->vm.guest.generation_id}, macs{base->vm.guest.mac}, draws;
  for (auto& clone : clones) {
    ids.insert(clone.vm.guest.generation_id);
    macs.insert(clone.vm.guest.mac);
    auto draw = testing::guest_run(clone, "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'");
    cr_expect_eq(draw.output.size(), 32u, "16 random bytes: '%s'", draw.output.c_str());
    draws.insert(draw.output);
  }
  cr_expect_eq(ids.size(), kClones + 1u, "fresh generation IDs");
  cr_expect_eq(macs.size(), kClones + 1u, "fresh MACs");
  cr_expect_eq(draws.size(), static_cast<size_t>(kClones), "every clone draws its own random numbers");

  // Each writes its own; with every cache dropped, each reads its own back.
  for (int i = 0; i < kClones; ++i) {
    testing::guest_run(clones[i], memcheck(32, 100 + i, "/tmp/go2", "/tmp/own.out"));
  }
  for (auto& clone : clones) testing::guest_wait_for(clone, "/tmp/own.out", "MEMCHECK written", 120s);
  for (auto& clone : clones) {
    auto dropped = vmm.drop_cache(clone.vm.name);
    cr_assert(dropped.has_value(), "%s", dropped ? "" : dropped.error().to_string().c_str());
  }
  for (auto& clone : clones) testing::guest_run(clone, "touch /tmp/go2");
  for (auto& clone : clones) expect_verified(clone, "/tmp/own.out");

  // The snapshot is what it was: a clone forked now, over QMP, finds the pattern.
  std::this_thread::sleep_until(recording_over);
  auto qmp = qmp::QmpClient::connect(testing::unix_socket(base->vm.qmp_endpoint), 5s);
  cr_assert(qmp.has_value());
  auto late = (*qmp)->execute("x-vmpod-fork", {{"snapshot", "base"}, {"name-prefix", "late"}}, 60s);
  cr_assert(late.has_value(), "%s", late ? "" : late.error().to_string().c_str());
  cr_assert_eq(late->size(), 1u);
  cr_expect_eq((*late)[0]["name"], "late-0");
  cr_expect_eq((*late)[0]["snapshot"], "base");
  auto late_vm = vmm.vm("late-0");
  cr_assert(late_vm.has_value());
  auto late_guest = testing::attach_guest(base->cluster, *late_vm);
  testing::guest_run(late_guest, "touch /tmp/go");
  expect_verified(late_guest, "/tmp/base.out");
  // base-0 recorded what it read in its first seconds, the memcheck's
  // pattern among it; the late clone fetched that ahead of its guest.
  auto recorded = vmm.snapshot("base");
  cr_assert(recorded.has_value());
  cr_expect_geq(recorded->working_set_bytes, 32ull << 20, "working set of %lu bytes", recorded->working_set_bytes);
  auto late_stats = vmm.vm_stats("late-0");
  cr_assert(late_stats.has_value());
  cr_expect_gt(late_stats->podfs.prefetched_bytes, 0u, "the late clone prefetched nothing");
  auto early_stats = vmm.vm_stats("base-1");
  cr_assert(early_stats.has_value());
  cr_expect_eq(early_stats->podfs.prefetched_bytes, 0u, "base-1 started while base-0 still recorded");

  // A snapshot of a clone, restored.
  testing::guest_run(clones[0], memcheck(16, 77, "/tmp/go3", "/tmp/child.out"));
  testing::guest_wait_for(clones[0], "/tmp/child.out", "MEMCHECK written", 120s);
  auto child = vmm.snapshot_vm("base-0", "child", false);
  cr_assert(child.has_value(), "%s", child ? "" : child.error().to_string().c_str());
  cr_expect_eq(child->parent, "base");
  auto grandchild = fork(vmm, "child", 1);
  auto grandchild_guest = testing::attach_guest(base->cluster, grandchild[0]);
  testing::guest_run(grandchild_guest, "touch /tmp/go3");
  expect_verified(grandchild_guest, "/tmp/child.out");

  auto listed = (*qmp)->execute("x-vmpod-query-snapshots");
  cr_assert(listed.has_value());
  cr_expect_eq(listed->size(), 2u);
  for (const auto& snapshot : *listed) {
    if (snapshot["name"] == "base") cr_expect_eq(snapshot["clones"], kClones + 1);
    if (snapshot["name"] == "child") cr_expect_eq(snapshot["clones"], 1);
  }

  // Stopping every clone and deleting both snapshots gives back every page
  // that is not vm0's own.
  for (auto& clone : clones) cr_expect(vmm.stop_vm(clone.vm.name).has_value());
  cr_expect(vmm.stop_vm("late-0").has_value());
  cr_expect(vmm.stop_vm(grandchild[0].name).has_value());
  cr_expect(vmm.delete_snapshot("child").has_value());
  auto deleted = (*qmp)->execute("x-vmpod-delete-snapshot", {{"name", "base"}});
  cr_assert(deleted.has_value(), "%s", deleted ? "" : deleted.error().to_string().c_str());
  auto gone = vmm.delete_snapshot("base");
  cr_expect(!gone.has_value() && gone.error().code() == ErrorCode::kNotFound);
  PodPages pages;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  do {
    pages = pod_pages(vmm);
    if (pages.versions == 0 && pages.held == pages.regions) break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < deadline);
  cr_expect_eq(pages.versions, 0u);
  cr_expect_eq(pages.held, pages.regions, "the pods hold %lu pages, vm0's regions %lu", pages.held, pages.regions);

  // Removing the stopped clones closes their endpoints: their sockets and
  // the vmm's threads for them go, and their names are free. A VM that
  // runs is not removed.
  auto running = vmm.remove_vm("vm0");
  cr_expect(!running.has_value() && running.error().code() == ErrorCode::kWrongState);
  std::vector<vmm::VmRecord> stopped{*late_vm, grandchild[0]};
  for (const auto& clone : clones) stopped.push_back(clone.vm);
  const size_t threads_before = thread_count(base->cluster->vmm_pid());
  for (const auto& clone : stopped) {
    auto removed = vmm.remove_vm(clone.name);
    cr_expect(removed.has_value(), "%s: %s", clone.name.c_str(), removed ? "" : removed.error().to_string().c_str());
    cr_expect(!std::filesystem::exists(clone.qmp_endpoint), "%s", clone.qmp_endpoint.c_str());
    cr_expect(!std::filesystem::exists(clone.hmp_endpoint), "%s", clone.hmp_endpoint.c_str());
    auto gone = vmm.vm(clone.name);
    cr_expect(!gone.has_value() && gone.error().code() == ErrorCode::kNotFound, "%s", clone.name.c_str());
  }
  const size_t threads_after = thread_count(base->cluster->vmm_pid());
  cr_expect_leq(threads_after + 2 * stopped.size(), threads_before,
                "the vmm had %zu threads with %zu stopped VMs, %zu without them", threads_before, stopped.size(),
                threads_after);
  auto listed_vms = vmm.vms();
  cr_assert(listed_vms.has_value());
  cr_expect_eq(listed_vms->size(), 1u, "vm0 alone is left");
}
