// Compute migration: a guest running a checksummed memory workload moves
// to the other compute pod and back in the middle of it, its RAM never
// copied; the workload ends with the right checksums, the QMP endpoint's
// clients stay connected and see each move. A migration whose destination
// dies leaves the guest running where it was.
#include <criterion/criterion.h>

#include <signal.h>

#include <future>
#include <thread>

#include <vmpod/qmp/qmp_client.h>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

std::string other_pod(const std::string& pod) { return pod == "cpu0" ? "cpu1" : "cpu0"; }

std::unique_ptr<qmp::QmpClient> connect_endpoint(const std::string& path) {
  auto client = qmp::QmpClient::connect(testing::unix_socket(path), 5s);
  cr_assert(client.has_value(), "%s", client ? "" : client.error().to_string().c_str());
  return std::move(*client);
}

// The agent listens on the QEMU that runs the guest now.
void follow_agent(testing::BootedGuest& guest, const vmm::VmRecord& vm) {
  auto agent = cpuserver::GuestAgent::connect(vm.runtime.paths.agent_socket, 60s);
  cr_assert(agent.has_value(), "agent after the move: %s", agent ? "" : agent.error().to_string().c_str());
  guest.agent = std::move(*agent);
}

vmm::VmRecord migrate(testing::BootedGuest& guest, const std::string& to) {
  auto moved = guest.vmm->migrate_vm("vm0", to);
  cr_assert(moved.has_value(), "migrate to %s: %s", to.c_str(), moved ? "" : moved.error().to_string().c_str());
  cr_assert_eq(moved->vm.compute_pod, to);
  cr_assert_eq(moved->vm.state, vmm::VmState::kRunning);
  cr_expect(moved->downtime.count() > 0 && moved->downtime <= moved->total);
  follow_agent(guest, moved->vm);
  return moved->vm;
}

}  // namespace

Test(migrate, a_running_workload_moves_twice_without_copying_ram, .timeout = 300,
     .fini = vmpod::testing::stop_all) {
  testing::GuestOptions options;
  options.compute_pods = 2;
  auto guest = testing::boot_guest("migrate", options);
  const std::string first = guest->vm.compute_pod;
  auto client = connect_endpoint(guest->vm.qmp_endpoint);

  // Eight rounds of write-then-verify over 64 MiB; the first waits for /tmp/go.
  testing::guest_run(*guest, "vmpod-memcheck --size-mib 64 --seed 11 --rounds 8 --wait-file /tmp/go "
                             ">/tmp/memcheck.out 2>&1 &");
  testing::guest_wait_for(*guest, "/tmp/memcheck.out", "MEMCHECK written", 120s);

  vmm::VmRecord there = migrate(*guest, other_pod(first));
  nlohmann::json changed = testing::wait_event(*client, "X_VMPOD_BACKEND_CHANGED", 30s);
  cr_expect_eq(changed["data"]["compute-pod"], other_pod(first));
  cr_expect_eq(changed["data"]["qemu-pid"], there.runtime.qemu_pid);
  auto status = client->execute("query-status");
  cr_assert(status.has_value(), "%s", status ? "" : status.error().to_string().c_str());
  cr_expect_eq((*status)["status"], "running");

  // Let the workload go on, and move it back while it writes.
  testing::guest_run(*guest, "touch /tmp/go");
  testing::guest_wait_for(*guest, "/tmp/memcheck.out", "round=2", 120s);
  vmm::VmRecord back = migrate(*guest, first);
  testing::wait_event(*client, "X_VMPOD_BACKEND_CHANGED", 30s);

  std::string out = testing::guest_wait_for(*guest, "/tmp/memcheck.out", "MEMCHECK done rounds=8", 240s);
  cr_expect(out.find("FAILED") == std::string::npos, "%s", out.c_str());
  for (int round = 1; round <= 8; ++round) {
    std::string verified = "MEMCHECK verified ok checksum=";
    cr_expect(out.find(verified) != std::string::npos && out.find("round=" + std::to_string(round)) != std::string::npos,
              "round %d: %s", round, out.c_str());
  }
  auto name = client->execute("query-name");
  cr_assert(name.has_value());
  cr_expect_eq((*name)["name"], "vm0");
  cr_expect_eq(back.memory_pods, guest->vm.memory_pods, "the RAM stayed on its memory pods");
}

Test(migrate, a_destination_that_dies_leaves_the_guest_running_on_the_source, .timeout = 300,
     .fini = vmpod::testing::stop_all) {
  testing::GuestOptions options;
  options.compute_pods = 2;
  auto guest = testing::boot_guest("migrate-fail", options);
  const std::string source = guest->vm.compute_pod;
  const std::string destination = other_pod(source);
  Subprocess& destination_process = guest->cluster->compute_pod_process(destination == "cpu0" ? 0 : 1);
  testing::guest_run(*guest, "vmpod-memcheck --size-mib 32 --seed 5 --rounds 3 >/tmp/memcheck.out 2>&1 &");

  // The destination stops answering once the move has begun, then dies.
  destination_process.kill(SIGSTOP);
  auto moving = std::async(std::launch::async, [&] { return guest->vmm->migrate_vm("vm0", destination); });
  std::this_thread::sleep_for(1s);
  destination_process.kill(SIGKILL);
  auto moved = moving.get();
  cr_assert(!moved.has_value(), "the migration to a dead pod succeeded");

  auto vm = guest->vmm->vm("vm0");
  cr_assert(vm.has_value());
  cr_expect_eq(vm->compute_pod, source);
  cr_expect_eq(vm->state, vmm::VmState::kRunning, "%s", vm->reason.c_str());
  std::string out = testing::guest_wait_for(*guest, "/tmp/memcheck.out", "MEMCHECK done rounds=3", 240s);
  cr_expect(out.find("FAILED") == std::string::npos, "%s", out.c_str());
  auto client = connect_endpoint(guest->vm.qmp_endpoint);
  auto status = client->execute("query-status");
  cr_assert(status.has_value());
  cr_expect_eq((*status)["status"], "running");
}
