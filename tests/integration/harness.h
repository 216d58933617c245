// Shared by the integration tests: a real cluster (memory pods, compute pod
// and vmm as `vmpod` processes), a booted guest on it, and its agent. The
// test's meson definition passes VMPOD_BINARY and VMPOD_IMAGE_DIR.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

namespace vmpod::testing {

struct GuestOptions {
  std::string name = "vm0";
  uint64_t memory_bytes = 256ull << 20;
  unsigned memory_pods = 2;
  uint64_t local_cache_bytes = 0;
  net::FabricProvider provider = net::FabricProvider::kTcp;
};

struct BootedGuest {
  vmm::LocalCluster* cluster;  // owned by the harness, see stop_all()
  std::unique_ptr<vmm::VmmClient> vmm;
  vmm::VmRecord vm;
  std::unique_ptr<cpuserver::GuestAgent> agent;
};

// A fresh directory under /tmp for one test's sockets and logs.
std::string test_dir(const std::string& name);
// The harness owns every cluster it starts, so that stop_all() can stop
// them when a failed assertion leaves the test body without running its
// destructors. Give every test `.fini = vmpod::testing::stop_all`.
vmm::LocalCluster* start_cluster(const std::string& dir, const GuestOptions& options);
void stop_all();
// Starts a cluster, boots the guest image on it, waits for its agent.
std::unique_ptr<BootedGuest> boot_guest(const std::string& test, const GuestOptions& options);

// Runs a command in the guest; fails the test if the agent cannot.
cpuserver::GuestCommandResult guest_run(BootedGuest& guest, const std::string& command,
                                        std::chrono::seconds timeout = std::chrono::seconds(120));
// Polls `cat file` in the guest until it contains `text`.
std::string guest_wait_for(BootedGuest& guest, const std::string& file, const std::string& text,
                           std::chrono::seconds timeout);

}  // namespace vmpod::testing
