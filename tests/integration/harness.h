// Shared by the integration tests: a real cluster (memory pods, compute pod
// and vmm as `vmpod` processes), a booted guest on it, and its agent. The
// test's meson definition passes VMPOD_BINARY and VMPOD_IMAGE_DIR.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include <nlohmann/json.hpp>

#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/qmp/qmp_client.h>
#include <vmpod/vmm/local_cluster.h>
#include <vmpod/vmm/vmm.h>

namespace vmpod::testing {

struct GuestOptions {
  std::string name = "vm0";
  uint64_t memory_bytes = 256ull << 20;
  uint64_t pod_capacity_bytes = 0;  // DRAM of each memory pod; 0: memory_bytes
  unsigned memory_pods = 2;
  unsigned compute_pods = 1;
  uint64_t local_cache_bytes = 0;
  net::FabricProvider provider = net::FabricProvider::kTcp;
  std::string qmp_tcp;  // VmRequest::qmp_tcp
  bool identity = false;  // a vmgenid generation ID and a NIC with a MAC
};

struct BootedGuest {
  vmm::LocalCluster* cluster;  // owned by the harness, see stop_all()
  std::unique_ptr<vmm::VmmClient> vmm;
  vmm::VmRecord vm;
  std::unique_ptr<cpuserver::GuestAgent> agent;
};

// A fresh directory under /tmp for one test's sockets and logs, left for a
// look after it; the next run of that test removes it.
std::string test_dir(const std::string& name);
// The harness owns every cluster it starts, so that stop_all() can stop
// them when a failed assertion leaves the test body without running its
// destructors. Give every test `.fini = vmpod::testing::stop_all`.
vmm::LocalCluster* start_cluster(const std::string& dir, const GuestOptions& options);
void stop_all();
// The guest image under TCG, as boot_guest() starts it.
cpuserver::GuestSpec guest_spec(const GuestOptions& options);
// Starts a cluster, boots the guest image on it, waits for its agent.
std::unique_ptr<BootedGuest> boot_guest(const std::string& test, const GuestOptions& options);

// A VM the vmm started from a snapshot, with its agent connected.
BootedGuest attach_guest(vmm::LocalCluster* cluster, const vmm::VmRecord& vm);

// Runs a command in the guest; fails the test if the agent cannot.
cpuserver::GuestCommandResult guest_run(BootedGuest& guest, const std::string& command,
                                        std::chrono::seconds timeout = std::chrono::seconds(120));
// Polls `cat file` in the guest until it contains `text`.
std::string guest_wait_for(BootedGuest& guest, const std::string& file, const std::string& text,
                           std::chrono::seconds timeout);
// The same through an agent of the caller's (a guest libvirt runs).
cpuserver::GuestCommandResult guest_run(cpuserver::GuestAgent& agent, const std::string& command,
                                        std::chrono::seconds timeout = std::chrono::seconds(120));
std::string guest_wait_for(cpuserver::GuestAgent& agent, const std::string& file, const std::string& text,
                           std::chrono::seconds timeout);

// A QMP connection that sends and reads raw lines, for what QmpClient
// would not do: commands before negotiation, malformed input, replies
// compared field for field. Events read meanwhile are kept in `events`.
class RawQmp {
 public:
  explicit RawQmp(const net::SocketAddress& address);
  const nlohmann::json& greeting() const { return greeting_; }
  void send(const std::string& bytes);
  // The next reply (not an event); fails the test after `timeout`.
  nlohmann::json reply(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Reads events for `quiet` after the last one.
  void drain_events(std::chrono::milliseconds quiet);
  std::vector<nlohmann::json> events;

 private:
  std::optional<nlohmann::json> next(std::chrono::milliseconds timeout);
  net::Fd fd_;
  std::string buffer_;
  nlohmann::json greeting_;
};

net::SocketAddress unix_socket(const std::string& path);
// Waits for the named event, skipping others; fails the test after timeout.
nlohmann::json wait_event(qmp::QmpClient& client, const std::string& name, std::chrono::seconds timeout);
// The resident set of a process, from /proc/PID/status.
uint64_t resident_bytes(pid_t pid);

}  // namespace vmpod::testing
