// Garbage, truncated, oversized and unknown frames sent to every daemon's
// control socket: each closes or answers that one connection, stays up,
// and serves the next well-formed client.
#include <criterion/criterion.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <vmpod/cpuserver/compute_client.h>
#include <vmpod/net/frame.h>
#include <vmpod/pods/memory_client.h>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

std::string header(uint32_t magic, uint32_t length, uint16_t type, uint16_t flags, uint64_t id) {
  std::string out(net::kFrameHeaderSize, '\0');
  std::memcpy(out.data(), &magic, 4);
  std::memcpy(out.data() + 4, &length, 4);
  std::memcpy(out.data() + 8, &type, 2);
  std::memcpy(out.data() + 10, &flags, 2);
  std::memcpy(out.data() + 12, &id, 8);
  return out;
}

std::vector<std::string> bad_inputs() {
  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage += static_cast<char>((i * 7919) & 0xff);
  return {
      garbage,
      header(net::kFrameMagic, 64, 0x0101, 0, 1).substr(0, 7),             // truncated header
      header(net::kFrameMagic, 64, 0x0101, 0, 1) + "short",                 // truncated body
      header(net::kFrameMagic, 0xfffffff0u, 0x0101, 0, 1),                  // oversized
      header(0xdeadbeef, 4, 0x0101, 0, 1) + "abcd",                         // bad magic
      header(net::kFrameMagic, 4, 0x7777, 0, 1) + "abcd",                   // unknown type
      header(net::kFrameMagic, 8, 0x0102, 0, 2) + std::string(8, '\xff'),  // malformed protobuf
      header(net::kFrameMagic, 0, 0x0301, net::kFrameReply, 3),             // a "reply" from a client
  };
}

// Sends one bad input and reads whatever comes back until the daemon
// answers or closes; it must do one of the two promptly.
void send_bad(const net::SocketAddress& address, const std::string& input) {
  auto fd = net::connect_socket(address, 2s);
  cr_assert(fd.has_value(), "cannot connect to %s: %s", address.to_string().c_str(),
            fd ? "" : fd.error().to_string().c_str());
  ::send(fd->get(), input.data(), input.size(), MSG_NOSIGNAL);
  ::shutdown(fd->get(), SHUT_WR);
  timeval timeout{5, 0};
  ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  char buffer[4096];
  while (::recv(fd->get(), buffer, sizeof(buffer), 0) > 0) {
  }
}

// The TCP ports a process listens on: its control socket is unix, so these
// are the libfabric tcp provider's listeners, the memory pod's page port.
std::vector<uint16_t> listening_ports(pid_t pid) {
  std::set<std::string> inodes;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::vector<uint16_t> ports;
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
    if (state == "0A" && inodes.count(inode)) {
      ports.push_back(static_cast<uint16_t>(std::stoul(local.substr(local.find(':') + 1), nullptr, 16)));
    }
  }
  return ports;
}

}  // namespace

Test(bad_input, every_daemon_survives_malformed_control_frames, .timeout = 120, .fini = vmpod::testing::stop_all) {
  std::string dir = testing::test_dir("bad-input");
  auto cluster = testing::start_cluster(dir, {});
  std::vector<net::SocketAddress> daemons = cluster->memory_pod_addresses();
  daemons.push_back(cluster->compute_pod_addresses().front());
  daemons.push_back(cluster->vmm_address());

  for (const auto& address : daemons) {
    for (const auto& input : bad_inputs()) send_bad(address, input);
  }
  // The same bad input on every memory pod's fabric port.
  for (size_t i = 0; i < cluster->memory_pod_addresses().size(); ++i) {
    auto ports = listening_ports(cluster->memory_pod_process(i).pid());
    cr_assert(!ports.empty(), "memory pod %zu listens on no tcp port", i);
    for (uint16_t port : ports) {
      net::SocketAddress fabric{net::SocketAddress::Kind::kTcp, "", "127.0.0.1", port};
      for (const auto& input : bad_inputs()) send_bad(fabric, input);
    }
  }
  // A client that connects and never sends, left open while others work.
  auto idle = net::connect_socket(cluster->vmm_address(), 2s);
  cr_assert(idle.has_value());

  auto vmm = vmm::VmmClient::connect(cluster->vmm_address(), 2s);
  cr_assert(vmm.has_value(), "vmm: %s", vmm ? "" : vmm.error().to_string().c_str());
  auto pods = (*vmm)->pods();
  cr_assert(pods.has_value(), "vmm: %s", pods ? "" : pods.error().to_string().c_str());
  cr_assert_eq(pods->size(), 3u);
  for (const auto& pod : *pods) cr_assert(pod.healthy, "%s: %s", pod.pod_id.c_str(), pod.reason.c_str());

  auto compute = cpuserver::ComputePodClient::connect(cluster->compute_pod_addresses().front(), 2s);
  cr_assert(compute.has_value());
  auto status = (*compute)->status();
  cr_assert(status.has_value(), "compute pod: %s", status ? "" : status.error().to_string().c_str());

  for (const auto& address : cluster->memory_pod_addresses()) {
    auto pod = pods::MemoryPodClient::connect(address, {});
    cr_assert(pod.has_value(), "memory pod: %s", pod ? "" : pod.error().to_string().c_str());
    auto region = (*pod)->create_region(1 << 20, "bad-input-test");
    cr_assert(region.has_value(), "%s", region ? "" : region.error().to_string().c_str());
    std::vector<std::byte> page(4096, std::byte{0x5a});
    cr_assert((*pod)->write(*region, 8192, page).has_value());
    std::vector<std::byte> back(4096);
    cr_assert((*pod)->read(*region, 8192, back).has_value());
    cr_assert(back == page);
    cr_assert((*pod)->delete_region(*region).has_value());
  }
}
