#include "harness.h"

#include <criterion/criterion.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

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
  std::string dir = "/tmp/vmpod-test-" + name + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

vmm::LocalCluster* start_cluster(const std::string& dir, const GuestOptions& options) {
  vmm::LocalClusterConfig config;
  config.vmpod_binary = env("VMPOD_BINARY");
  config.dir = dir;
  config.memory_pods = options.memory_pods;
  config.memory_pod_capacity = options.memory_bytes;
  config.provider = options.provider;
  auto cluster = vmm::LocalCluster::start(config);
  cr_assert(cluster.has_value(), "cluster: %s", cluster ? "" : cluster.error().to_string().c_str());
  clusters().push_back(std::move(*cluster));
  return clusters().back().get();
}

std::unique_ptr<BootedGuest> boot_guest(const std::string& test, const GuestOptions& options) {
  auto guest = std::make_unique<BootedGuest>();
  guest->cluster = start_cluster(test_dir(test), options);
  auto client = vmm::VmmClient::connect(guest->cluster->vmm_address(), std::chrono::seconds(5));
  cr_assert(client.has_value(), "vmm: %s", client ? "" : client.error().to_string().c_str());
  guest->vmm = std::move(*client);

  vmm::VmRequest request;
  request.guest.name = options.name;
  request.guest.memory_bytes = options.memory_bytes;
  request.guest.accel = cpuserver::Accel::kTcg;
  std::string images = env("VMPOD_IMAGE_DIR");
  request.guest.kernel = images + "/vmlinux";
  request.guest.initrd = images + "/initramfs.cpio.gz";
  request.guest.append = "console=ttyS0 panic=-1 quiet mitigations=off cryptomgr.notests";
  request.memory_pod_count = options.memory_pods;
  request.local_cache_bytes = options.local_cache_bytes;
  request.provider = options.provider;
  auto vm = guest->vmm->create_vm(request);
  cr_assert(vm.has_value(), "create vm: %s", vm ? "" : vm.error().to_string().c_str());
  guest->vm = *vm;
  auto agent = cpuserver::GuestAgent::connect(vm->runtime.paths.agent_socket, std::chrono::seconds(120));
  cr_assert(agent.has_value(), "guest agent: %s", agent ? "" : agent.error().to_string().c_str());
  guest->agent = std::move(*agent);
  return guest;
}

cpuserver::GuestCommandResult guest_run(BootedGuest& guest, const std::string& command,
                                        std::chrono::seconds timeout) {
  auto result = guest.agent->run(command, timeout);
  cr_assert(result.has_value(), "guest command '%s': %s", command.c_str(),
            result ? "" : result.error().to_string().c_str());
  return *result;
}

std::string guest_wait_for(BootedGuest& guest, const std::string& file, const std::string& text,
                           std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string output;
  while (std::chrono::steady_clock::now() < deadline) {
    output = guest_run(guest, "cat " + file).output;
    if (output.find(text) != std::string::npos) return output;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  cr_assert_fail("'%s' never appeared in %s; it holds: %s", text.c_str(), file.c_str(), output.c_str());
  return output;
}

}  // namespace vmpod::testing
