// A VM's QMP endpoint passes QEMU's commands through and outlives the QEMU
// behind it: with four clients connected, the VM is restarted on a fresh
// QEMU; none is disconnected, all see the event, and their next command
// works against the new QEMU. The x-vmpod commands answer as the schema
// says (every reply and event is held to the generated introspection), the
// HMP socket and human-monitor-command reach both ours and QEMU's, and a
// TCP endpoint serves the same.
#include <criterion/criterion.h>

#include <poll.h>
#include <sys/socket.h>

#include <set>

#include <vmpod/qmp/qapi.h>
#include <vmpod/qmp/qmp_client.h>

#include "harness.h"
#include "vmpod_qapi.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<qmp::QmpClient> connect_endpoint(const net::SocketAddress& address) {
  auto client = qmp::QmpClient::connect(address, 5s);
  cr_assert(client.has_value(), "endpoint %s: %s", address.to_string().c_str(),
            client ? "" : client.error().to_string().c_str());
  return std::move(*client);
}

std::unique_ptr<qmp::QmpClient> connect_endpoint(const std::string& path) {
  return connect_endpoint(testing::unix_socket(path));
}

// The reply's return value, held to the command's ret-type.
nlohmann::json checked_execute(qmp::QmpClient& client, const std::string& command,
                               const nlohmann::json& arguments = nlohmann::json::object()) {
  auto reply = client.execute(command, arguments, 60s);
  cr_assert(reply.has_value(), "%s: %s", command.c_str(), reply ? "" : reply.error().to_string().c_str());
  static const qmp::SchemaIndex schema(vmm::qapi::introspection());
  auto type = schema.return_type(command);
  cr_assert(type.has_value(), "%s is not in the schema", command.c_str());
  auto error = schema.check_value(*type, *reply, "return");
  cr_assert(!error.has_value(), "%s: %s in %s", command.c_str(), error.value_or("").c_str(), reply->dump().c_str());
  return *reply;
}

// Every X_VMPOD_* event seen, held to its data type.
void check_vmpod_event(const nlohmann::json& event) {
  static const qmp::SchemaIndex schema(vmm::qapi::introspection());
  const std::string name = event.value("event", "");
  if (!name.starts_with("X_VMPOD_")) return;
  auto type = schema.event_type(name);
  cr_assert(type.has_value(), "%s is not in the schema", name.c_str());
  auto error = schema.check_value(*type, event.value("data", nlohmann::json::object()), "data");
  cr_assert(!error.has_value(), "%s: %s", name.c_str(), error.value_or("").c_str());
  cr_assert(event["timestamp"].contains("seconds") && event["timestamp"].contains("microseconds"));
}

// Every HMP line over the text socket: sends it, returns what came back
// before the next prompt.
std::string hmp_line(net::Fd& fd, std::string& pending, const std::string& line) {
  if (!line.empty()) {
    std::string text = line + "\n";
    cr_assert_eq(::send(fd.get(), text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
  }
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (pending.find("(qemu) ") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd entry{fd.get(), POLLIN, 0};
    if (::poll(&entry, 1, 200) <= 0) continue;
    char chunk[4096];
    ssize_t n = ::recv(fd.get(), chunk, sizeof(chunk), 0);
    cr_assert(n > 0, "the HMP socket closed");
    pending.append(chunk, static_cast<size_t>(n));
  }
  size_t prompt = pending.find("(qemu) ");
  cr_assert(prompt != std::string::npos, "no HMP prompt after '%s'", line.c_str());
  std::string out = pending.substr(0, prompt);
  pending.erase(0, prompt + 7);
  return out;
}

// Replies whose return is a list, as QEMU's query-commands and
// query-qmp-schema.
nlohmann::json checked_execute_raw_list(qmp::QmpClient& client, const std::string& command) {
  auto reply = client.execute(command, nlohmann::json::object(), 60s);
  cr_assert(reply.has_value(), "%s: %s", command.c_str(), reply ? "" : reply.error().to_string().c_str());
  cr_assert(reply->is_array(), "%s", command.c_str());
  return *reply;
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
    nlohmann::json event = testing::wait_event(*client, "X_VMPOD_BACKEND_CHANGED", 30s);
    check_vmpod_event(event);
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
  for (auto& client : clients) check_vmpod_event(testing::wait_event(*client, "X_VMPOD_BACKEND_GONE", 30s));
  auto after_stop = clients[0]->execute_raw({{"execute", "query-status"}});
  cr_assert(after_stop.has_value(), "the endpoint closed with the vm stopped");
  cr_assert_eq((*after_stop)["error"]["class"], "GenericError", "%s", after_stop->dump().c_str());
}

Test(qmp_endpoint, vmpod_commands_hmp_and_tcp_follow_the_schema, .timeout = 300, .fini = vmpod::testing::stop_all) {
  testing::GuestOptions options;
  options.qmp_tcp = "127.0.0.1:0";
  auto guest = testing::boot_guest("qmp-vmpod", options);
  cr_assert(!guest->vm.hmp_endpoint.empty());
  cr_assert(guest->vm.qmp_tcp_endpoint.starts_with("tcp:127.0.0.1:"), "%s", guest->vm.qmp_tcp_endpoint.c_str());
  auto client = connect_endpoint(guest->vm.qmp_endpoint);

  // The guest has run: its RAM is on both memory pods, in this VM's regions.
  nlohmann::json pods = checked_execute(*client, "x-vmpod-query-pods");
  cr_assert_eq(pods.size(), 3u, "%s", pods.dump().c_str());
  cr_expect_eq(pods[0]["kind"], "compute");
  cr_expect_eq(pods[0]["pod-id"], guest->vm.compute_pod);
  for (size_t i = 1; i < 3; ++i) {
    cr_expect_eq(pods[i]["kind"], "memory");
    cr_expect_eq(pods[i]["pod-id"], guest->vm.memory_pods[i - 1]);
    cr_expect_eq(pods[i]["healthy"], true);
  }
  auto memcheck = testing::guest_run(*guest, "vmpod-memcheck --size-mib 32 --seed 1");
  cr_assert_eq(memcheck.exit_code, 0, "%s", memcheck.output.c_str());
  auto dropped = guest->vmm->drop_cache("vm0");
  cr_assert(dropped.has_value(), "%s", dropped ? "" : dropped.error().to_string().c_str());
  nlohmann::json memory = checked_execute(*client, "x-vmpod-query-memory");
  cr_assert_eq(memory.size(), 3u);
  cr_expect_eq(memory[0]["tier"], "local-cache");
  uint64_t remote_pages = 0;
  for (size_t i = 1; i < 3; ++i) {
    cr_expect_eq(memory[i]["tier"], "memory-pod");
    cr_expect_gt(memory[i]["pages"].get<uint64_t>(), 0u, "%s", memory.dump().c_str());
    cr_expect_leq(memory[i]["pages"].get<uint64_t>(), memory[i]["pod-pages"].get<uint64_t>());
    cr_expect_eq(memory[i]["bytes"].get<uint64_t>(), memory[i]["pages"].get<uint64_t>() * 4096);
    remote_pages += memory[i]["pages"].get<uint64_t>();
  }
  // memcheck wrote 32 MiB of non-zero pages, now only on the memory pods.
  cr_expect_geq(remote_pages, (32u << 20) / 4096, "%s", memory.dump().c_str());
  nlohmann::json cache = checked_execute(*client, "x-vmpod-query-cache");
  cr_expect_eq(cache["limit-bytes"], 0);
  cr_expect_gt(cache["write-backs"].get<uint64_t>(), 0u);
  cr_expect_geq(cache["misses"].get<uint64_t>(), cache["zero-fills"].get<uint64_t>());
  nlohmann::json vm = checked_execute(*client, "x-vmpod-query-vm");
  cr_expect_eq(vm["name"], "vm0");
  cr_expect_eq(vm["state"], "running");
  cr_expect_eq(vm["qemu-pid"], guest->vm.runtime.qemu_pid);

  // Arguments are checked against the schema before anything runs.
  auto bad = client->execute_raw({{"execute", "x-vmpod-query-cache"}, {"arguments", {{"vm", "vm1"}}}, {"id", 7}});
  cr_assert(bad.has_value());
  cr_expect_eq((*bad)["error"]["class"], "GenericError");
  cr_expect_eq((*bad)["error"]["desc"], "Parameter 'vm' is unexpected");
  cr_expect_eq((*bad)["id"], 7);

  // Introspection is QEMU's and ours, each name once.
  nlohmann::json commands = checked_execute_raw_list(*client, "query-commands");
  std::set<std::string> names;
  for (const auto& command : commands) cr_assert(names.insert(command["name"].get<std::string>()).second);
  for (const char* name : {"query-status", "cont", "x-vmpod-query-pods", "x-vmpod-query-memory", "x-vmpod-query-cache",
                           "x-vmpod-snapshot", "x-vmpod-fork", "x-vmpod-migrate"}) {
    cr_expect(names.contains(name), "query-commands lacks %s", name);
  }
  nlohmann::json schema = checked_execute_raw_list(*client, "query-qmp-schema");
  std::set<std::string> entries;
  for (const auto& entry : schema) cr_assert(entries.insert(entry["name"].get<std::string>()).second, "%s twice", entry["name"].dump().c_str());
  for (const auto& ours : vmm::qapi::introspection()) cr_expect(entries.contains(ours["name"]), "%s", ours.dump().c_str());
  cr_expect(entries.contains("query-status"));

  // stop and cont: QEMU's events pass through and the VM's state follows.
  auto stopped = client->execute("stop");
  cr_assert(stopped.has_value());
  testing::wait_event(*client, "STOP", 30s);
  nlohmann::json paused = testing::wait_event(*client, "X_VMPOD_VM_STATE", 30s);
  check_vmpod_event(paused);
  cr_expect_eq(paused["data"]["state"], "paused");
  cr_expect_eq(checked_execute(*client, "x-vmpod-query-vm")["state"], "paused");
  auto listed = guest->vmm->vm("vm0");
  cr_assert(listed.has_value());
  cr_expect_eq(listed->state, vmm::VmState::kPaused);
  cr_assert(client->execute("cont").has_value());
  nlohmann::json running = testing::wait_event(*client, "X_VMPOD_VM_STATE", 30s);
  cr_expect_eq(running["data"]["state"], "running");

  // HMP through human-monitor-command: ours, QEMU's, and help with both.
  auto text = client->execute("human-monitor-command", {{"command-line", "info pods"}});
  cr_assert(text.has_value());
  cr_expect(text->get<std::string>().find(guest->vm.memory_pods[1]) != std::string::npos, "%s", text->dump().c_str());
  text = client->execute("human-monitor-command", {{"command-line", "info status"}});
  cr_assert(text.has_value());
  cr_expect_eq(text->get<std::string>(), "VM status: running\r\n");
  text = client->execute("human-monitor-command", {{"command-line", "help"}});
  cr_assert(text.has_value());
  cr_expect(text->get<std::string>().find("info [subcommand]") != std::string::npos, "QEMU's help is missing");
  cr_expect(text->get<std::string>().find("info cache --") != std::string::npos, "our help is missing");

  // The HMP text socket: the same lines, with QEMU's prompt.
  auto hmp = net::connect_socket(testing::unix_socket(guest->vm.hmp_endpoint), 5s);
  cr_assert(hmp.has_value());
  std::string pending;
  std::string banner = hmp_line(*hmp, pending, "");
  cr_expect(banner.find("type 'help' for more information") != std::string::npos, "%s", banner.c_str());
  std::string info_memory = hmp_line(*hmp, pending, "info memory");
  cr_expect(info_memory.find("memory-pod") != std::string::npos, "%s", info_memory.c_str());
  const std::string info_status = hmp_line(*hmp, pending, "info status");
  cr_expect_str_eq(info_status.c_str(), "VM status: running\r\n");
  std::string unknown = hmp_line(*hmp, pending, "no-such-hmp-command");
  cr_expect(unknown.find("unknown command") != std::string::npos, "%s", unknown.c_str());

  // The TCP endpoint is the same endpoint.
  auto tcp_address = net::parse_socket_address(guest->vm.qmp_tcp_endpoint);
  cr_assert(tcp_address.has_value());
  auto tcp = connect_endpoint(*tcp_address);
  cr_expect_eq(checked_execute(*tcp, "x-vmpod-query-vm")["name"], "vm0");
  auto status = tcp->execute("query-status");
  cr_assert(status.has_value());
  cr_expect_eq((*status)["status"], "running");
}
