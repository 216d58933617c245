#include "harness.h"

#include <criterion/criterion.h>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <vmpod/cpuserver/guest_identity.h>

namespace vmpod::testing {

namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  cr_assert(value != nullptr, "%s is not set: run through meson test", name);
  return value;
}

}  // namespace

std::vector<std::unique_ptr<vmm::LocalCluster>>& clusters() {
  static std::vector<std::unique_ptr<vmm::LocalCluster>> all;
  return all;
}

void stop_all() {
  // Newest first; each stops its vmm (and so its VMs), then its pods.
  while (!clusters().empty()) clusters().pop_back();
}

std::string test_dir(const std::string& name) {
  const std::string prefix = "vmpod-test-" + name + "-";
  // Earlier runs' directories (of processes that are gone) go; this run's
  // stays after it, its logs there for a look.
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/tmp", ignored)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind(prefix, 0) != 0) continue;
    const std::string pid = file.substr(prefix.size());
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (::kill(static_cast<pid_t>(std::stol(pid)), 0) == 0 || errno != ESRCH) continue;
    std::filesystem::remove_all(entry.path(), ignored);
  }
  std::string dir = "/tmp/" + prefix + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

vmm::LocalCluster* start_cluster(const std::string& dir, const GuestOptions& options) {
  vmm::LocalClusterConfig config;
  config.vmpod_binary = env("VMPOD_BINARY");
  config.dir = dir;
  config.memory_pods = options.memory_pods;
  config.compute_pods = options.compute_pods;
  config.memory_pod_capacity = options.pod_capacity_bytes ? options.pod_capacity_bytes : options.memory_bytes;
  config.provider = options.provider;
  auto cluster = vmm::LocalCluster::start(config);
  cr_assert(cluster.has_value(), "cluster: %s", cluster ? "" : cluster.error().to_string().c_str());
  clusters().push_back(std::move(*cluster));
  return clusters().back().get();
}

cpuserver::GuestSpec guest_spec(const GuestOptions& options) {
  cpuserver::GuestSpec guest;
  guest.name = options.name;
  guest.memory_bytes = options.memory_bytes;
  guest.accel = cpuserver::Accel::kTcg;
  std::string images = env("VMPOD_IMAGE_DIR");
  guest.kernel = images + "/vmlinux";
  guest.initrd = images + "/initramfs.cpio.gz";
  guest.append = cpuserver::kGuestImageAppend;
  if (options.identity) {
    guest.generation_id = cpuserver::new_generation_id();
    guest.mac = cpuserver::new_mac();
  }
  return guest;
}

std::unique_ptr<BootedGuest> boot_guest(const std::string& test, const GuestOptions& options) {
  auto guest = std::make_unique<BootedGuest>();
  guest->cluster = start_cluster(test_dir(test), options);
  auto client = vmm::VmmClient::connect(guest->cluster->vmm_address(), std::chrono::seconds(5));
  cr_assert(client.has_value(), "vmm: %s", client ? "" : client.error().to_string().c_str());
  guest->vmm = std::move(*client);

  vmm::VmRequest request;
  request.guest = guest_spec(options);
  request.memory_pod_count = options.memory_pods;
  request.local_cache_bytes = options.local_cache_bytes;
  request.provider = options.provider;
  request.qmp_tcp = options.qmp_tcp;
  auto vm = guest->vmm->create_vm(request);
  cr_assert(vm.has_value(), "create vm: %s", vm ? "" : vm.error().to_string().c_str());
  guest->vm = *vm;
  auto agent = cpuserver::GuestAgent::connect(vm->runtime.paths.agent_socket, std::chrono::seconds(120));
  cr_assert(agent.has_value(), "guest agent: %s", agent ? "" : agent.error().to_string().c_str());
  guest->agent = std::move(*agent);
  return guest;
}

BootedGuest attach_guest(vmm::LocalCluster* cluster, const vmm::VmRecord& vm) {
  BootedGuest guest{cluster, nullptr, vm, nullptr};
  auto agent = cpuserver::GuestAgent::connect(vm.runtime.paths.agent_socket, std::chrono::seconds(60));
  cr_assert(agent.has_value(), "agent of %s: %s", vm.name.c_str(), agent ? "" : agent.error().to_string().c_str());
  guest.agent = std::move(*agent);
  return guest;
}

cpuserver::GuestCommandResult guest_run(BootedGuest& guest, const std::string& command,
                                        std::chrono::seconds timeout) {
  return guest_run(*guest.agent, command, timeout);
}

std::string guest_wait_for(BootedGuest& guest, const std::string& file, const std::string& text,
                           std::chrono::seconds timeout) {
  return guest_wait_for(*guest.agent, file, text, timeout);
}

cpuserver::GuestCommandResult guest_run(cpuserver::GuestAgent& agent, const std::string& command,
                                        std::chrono::seconds timeout) {
  auto result = agent.run(command, timeout);
  cr_assert(result.has_value(), "guest command '%s': %s", command.c_str(),
            result ? "" : result.error().to_string().c_str());
  return *result;
}

std::string guest_wait_for(cpuserver::GuestAgent& agent, const std::string& file, const std::string& text,
                           std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string output;
  while (std::chrono::steady_clock::now() < deadline) {
    output = guest_run(agent, "cat " + file).output;
    if (output.find(text) != std::string::npos) return output;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  cr_assert_fail("'%s' never appeared in %s; it holds: %s", text.c_str(), file.c_str(), output.c_str());
  return output;
}

RawQmp::RawQmp(const net::SocketAddress& address) {
  auto fd = net::connect_socket(address, std::chrono::seconds(5));
  cr_assert(fd.has_value(), "qmp %s: %s", address.to_string().c_str(), fd ? "" : fd.error().to_string().c_str());
  fd_ = std::move(*fd);
  auto greeting = next(std::chrono::seconds(10));
  cr_assert(greeting.has_value() && greeting->contains("QMP"), "no QMP greeting from %s", address.to_string().c_str());
  greeting_ = *greeting;
}

void RawQmp::send(const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::send(fd_.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    cr_assert(n > 0, "qmp send: %s", std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
}

std::optional<nlohmann::json> RawQmp::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    size_t end = buffer_.find('\n');
    if (end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 1);
      if (line.find_first_not_of(" \r") == std::string::npos) continue;
      auto message = nlohmann::json::parse(line, nullptr, false);
      cr_assert(!message.is_discarded(), "not JSON from the server: %s", line.c_str());
      return message;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd entry{fd_.get(), POLLIN, 0};
    if (::poll(&entry, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[65536];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
    cr_assert(n > 0, "the server closed the connection");
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

nlohmann::json RawQmp::reply(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto message = next(std::max(left, std::chrono::milliseconds(0)));
    cr_assert(message.has_value(), "no reply within %ld ms", static_cast<long>(timeout.count()));
    if (message->contains("event")) {
      events.push_back(*message);
      continue;
    }
    return *message;
  }
}

void RawQmp::drain_events(std::chrono::milliseconds quiet) {
  while (auto message = next(quiet)) {
    cr_assert(message->contains("event"), "a reply nobody asked for: %s", message->dump().c_str());
    events.push_back(*message);
  }
}

net::SocketAddress unix_socket(const std::string& path) {
  return {net::SocketAddress::Kind::kUnix, path, "", 0};
}

nlohmann::json wait_event(qmp::QmpClient& client, const std::string& name, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto event = client.next_event(std::chrono::seconds(1));
    if (event && event->value("event", "") == name) return *event;
  }
  cr_assert_fail("no %s event within %ld s", name.c_str(), static_cast<long>(timeout.count()));
  return {};
}

uint64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  cr_assert_fail("no VmRSS for pid %d", pid);
  return 0;
}

}  // namespace vmpod::testing
