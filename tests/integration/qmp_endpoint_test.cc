// A VM's QMP endpoint passes QEMU's commands through and outlives the QEMU
// behind it: with four clients connected, the VM is restarted on a fresh
// QEMU; none is disconnected, all see the event, and their next command
// works against the new QEMU.
#include <criterion/criterion.h>

#include <vmpod/qmp/qmp_client.h>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<qmp::QmpClient> connect_endpoint(const std::string& path) {
  net::SocketAddress address{net::SocketAddress::Kind::kUnix, path, "", 0};
  auto client = qmp::QmpClient::connect(address, 5s);
  cr_assert(client.has_value(), "endpoint %s: %s", path.c_str(), client ? "" : client.error().to_string().c_str());
  return std::move(*client);
}

// Waits for the named event, skipping others.
nlohmann::json wait_event(qmp::QmpClient& client, const std::string& name, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto event = client.next_event(1s);
    if (event && event->value("event", "") == name) return *event;
  }
  cr_assert_fail("no %s event within %ld s", name.c_str(), static_cast<long>(timeout.count()));
  return {};
}

}  // namespace

Test(qmp_endpoint, clients_stay_connected_across_a_new_qemu, .timeout = 300, .fini = vmpod::testing::stop_all) {
  auto guest = testing::boot_guest("qmp-endpoint", {});
  cr_assert(!guest->vm.qmp_endpoint.empty(), "the vm has no endpoint");

  std::vector<std::unique_ptr<qmp::QmpClient>> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(connect_endpoint(guest->vm.qmp_endpoint));
  const nlohmann::json& greeting = clients[0]->greeting();
  cr_assert_eq(greeting["QMP"]["version"]["qemu"].value("major", 0), 7, "%s", greeting.dump().c_str());
  cr_assert(greeting["QMP"]["version"].value("package", "").find("vmpod") != std::string::npos);

  for (auto& client : clients) {
    auto status = client->execute("query-status");
    cr_assert(status.has_value(), "%s", status ? "" : status.error().to_string().c_str());
    cr_assert_eq((*status)["status"], "running");
  }
  auto name = clients[1]->execute("query-name");
  cr_assert(name.has_value());
  cr_assert_eq((*name)["name"], "vm0");
  auto bad = clients[2]->execute_raw({{"execute", "no-such-command"}, {"id", "x"}});
  cr_assert(bad.has_value());
  cr_assert_eq((*bad)["error"]["class"], "CommandNotFound", "%s", bad->dump().c_str());
  cr_assert_eq((*bad)["id"], "x");

  int old_pid = guest->vm.runtime.qemu_pid;
  auto restarted = guest->vmm->restart_vm("vm0");
  cr_assert(restarted.has_value(), "%s", restarted ? "" : restarted.error().to_string().c_str());
  cr_assert_neq(restarted->runtime.qemu_pid, old_pid, "the same QEMU is still behind the endpoint");
  cr_assert_eq(restarted->qmp_endpoint, guest->vm.qmp_endpoint);

  for (auto& client : clients) {
    nlohmann::json event = wait_event(*client, "X_VMPOD_BACKEND_CHANGED", 30s);
    cr_assert_eq(event["data"].value("qemu-pid", 0), restarted->runtime.qemu_pid, "%s", event.dump().c_str());
    cr_assert(event.contains("timestamp"));
    auto status = client->execute("query-status");
    cr_assert(status.has_value(), "after the restart: %s", status ? "" : status.error().to_string().c_str());
  }
  // The new QEMU is the one answering: it has just started.
  auto pid_check = clients[3]->execute("human-monitor-command", {{"command-line", "info name"}});
  cr_assert(pid_check.has_value(), "%s", pid_check ? "" : pid_check.error().to_string().c_str());

  auto stopped = guest->vmm->stop_vm("vm0");
  cr_assert(stopped.has_value());
  for (auto& client : clients) wait_event(*client, "X_VMPOD_BACKEND_GONE", 30s);
  auto after_stop = clients[0]->execute_raw({{"execute", "query-status"}});
  cr_assert(after_stop.has_value(), "the endpoint closed with the vm stopped");
  cr_assert_eq((*after_stop)["error"]["class"], "GenericError", "%s", after_stop->dump().c_str());
}
