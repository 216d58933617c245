// SnapshotStore against two memory pods started in-process: it freezes,
// forks and releases versions through the pods' control sockets, keeps the
// device state as a file, and leaves no version behind when a step fails
// or when it is destroyed.
#include <criterion/criterion.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <vmpod/memserver/memserver.h>
#include <vmpod/pods/region_control.h>

#include "src/snapshot_store.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kRegionBytes = 64 * kPage;

struct Pod {
  std::unique_ptr<memserver::Memserver> server;
  std::unique_ptr<net::RpcClient> rpc;
  std::unique_ptr<pods::RegionControl> regions;
};

// Outside the test bodies: a failed assertion skips destructors.
std::string g_dir;
std::map<std::string, Pod>& g_pods = *new std::map<std::string, Pod>;

void setup() {
  char tmpl[] = "/tmp/vmpod-snapshot-store-XXXXXX";
  cr_assert_not_null(::mkdtemp(tmpl));
  g_dir = tmpl;
  for (const char* id : {"mem0", "mem1"}) {
    memserver::MemserverConfig config;
    config.pod_id = id;
    config.control = {net::SocketAddress::Kind::kUnix, g_dir + "/" + id + ".sock", "", 0};
    config.fabric.node = "127.0.0.1";
    config.capacity_bytes = 4 * kRegionBytes;
    auto server = memserver::Memserver::start(config);
    cr_assert(server.has_value(), "%s", server ? "" : server.error().to_string().c_str());
    auto rpc = net::RpcClient::connect((*server)->control_address(), 5s);
    cr_assert(rpc.has_value());
    auto regions = std::make_unique<pods::RegionControl>(**rpc, 5s);
    g_pods[id] = Pod{std::move(*server), std::move(*rpc), std::move(regions)};
  }
}

void teardown() {
  g_pods.clear();
  if (!g_dir.empty()) std::filesystem::remove_all(g_dir);
}

// The vmm's per-pod calls; a pod named "lost" is down.
vmm::MemoryPodCalls calls() {
  return [](const std::string& pod, const std::function<Status(pods::RegionControl&)>& call) -> Status {
    auto it = g_pods.find(pod);
    if (it == g_pods.end()) return fail(ErrorCode::kUnavailable, "memory pod " + pod + " not connected");
    return call(*it->second.regions);
  };
}

std::vector<std::byte> pattern(size_t size, uint8_t seed) {
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<std::byte>((i * 7 + seed) | 1);
  return out;
}

memserver::PageStore& store(const std::string& pod) { return g_pods.at(pod).server->store(); }

// A guest's RAM as send_guest() hands it over: one region per pod, with
// `pages` written on each, and a device state.
cpuserver::GuestTransfer sent_guest(const std::vector<std::string>& pods, uint64_t pages, uint8_t seed) {
  cpuserver::GuestTransfer sent;
  sent.device_state = "QEVM device state " + std::to_string(seed);
  sent.ram.size = kRegionBytes * pods.size();
  for (const auto& pod : pods) {
    auto region = g_pods.at(pod).regions->create_region(kRegionBytes, "test");
    cr_assert(region.has_value(), "%s", region ? "" : region.error().to_string().c_str());
    cr_assert(store(pod).write(region->id, region->token, 0, pattern(pages * kPage, seed)).has_value());
    sent.ram.regions.push_back(*region);
  }
  return sent;
}

vmm::SnapshotRecord record(const std::string& name, std::vector<std::string> pods) {
  vmm::SnapshotRecord out;
  out.name = name;
  out.vm = "vm0";
  out.memory_pods = std::move(pods);
  return out;
}

std::vector<std::byte> read(const std::string& pod, const pods::RegionHandle& region, uint64_t bytes) {
  std::vector<std::byte> out(bytes);
  cr_assert(store(pod).read(region.id, region.token, 0, out).has_value());
  return out;
}

uint64_t versions(const std::string& pod) { return store(pod).stats().versions; }

}  // namespace

TestSuite(snapshot_store, .init = setup, .fini = teardown, .timeout = 60);

Test(snapshot_store, freezes_forks_and_releases) {
  const std::vector<std::string> pods{"mem0", "mem1"};
  auto sent = sent_guest(pods, 8, 1);
  vmm::SnapshotStore snapshots(g_dir + "/snapshots", calls());
  auto taken = snapshots.take(record("ready", pods), {}, {}, sent);
  cr_assert(taken.has_value(), "%s", taken ? "" : taken.error().to_string().c_str());
  cr_expect_eq(taken->pages, 16u);
  cr_expect_eq(taken->device_state_bytes, sent.device_state.size());
  cr_expect_eq(taken->ram_bytes, sent.ram.size);
  std::ifstream state(g_dir + "/snapshots/ready.state", std::ios::binary);
  cr_expect_eq(std::string(std::istreambuf_iterator<char>(state), {}), sent.device_state);
  cr_expect_eq(snapshots.check_new_name("ready").error().code(), ErrorCode::kAlreadyExists);
  for (const char* bad : {"", "../x", ".hidden", "-flag", "a/b"}) {
    cr_expect_eq(snapshots.check_new_name(bad).error().code(), ErrorCode::kInvalidArgument, "'%s'", bad);
  }

  // The guest writes on after its snapshot; a fork sees the snapshot.
  for (size_t i = 0; i < pods.size(); ++i) {
    cr_assert(store(pods[i]).write(sent.ram.regions[i].id, sent.ram.regions[i].token, 0, pattern(8 * kPage, 9)));
  }
  auto snapshot = snapshots.find("ready");
  cr_assert(snapshot.has_value());
  auto clone = snapshots.fork(*snapshot, "clone", false);
  cr_assert(clone.has_value(), "%s", clone ? "" : clone.error().to_string().c_str());
  cr_expect_eq(clone->device_state, sent.device_state);
  cr_expect(!clone->running);
  cr_assert_eq(clone->ram.regions.size(), 2u);
  for (size_t i = 0; i < pods.size(); ++i) {
    cr_expect(read(pods[i], clone->ram.regions[i], 8 * kPage) == pattern(8 * kPage, 1), "clone on %s", pods[i].c_str());
    cr_expect(read(pods[i], sent.ram.regions[i], 8 * kPage) == pattern(8 * kPage, 9));
  }

  // Deleted, the snapshot's versions live on while the clone reads them.
  cr_assert(snapshots.remove("ready").has_value());
  cr_expect(!std::filesystem::exists(g_dir + "/snapshots/ready.state"));
  cr_expect_eq(snapshots.remove("ready").error().code(), ErrorCode::kNotFound);
  cr_expect_eq(versions("mem0"), 0u);
  cr_expect(read("mem0", clone->ram.regions[0], 8 * kPage) == pattern(8 * kPage, 1));
  snapshots.delete_regions(*snapshot, clone->ram);
  for (const auto& pod : pods) {
    store(pod).flatten();
    cr_expect_eq(store(pod).stats().regions, 1u, "%s", pod.c_str());
    cr_expect_eq(store(pod).stats().pages_held, 8u, "%s holds only the guest's own pages", pod.c_str());
  }
}

Test(snapshot_store, a_failed_freeze_releases_what_it_froze) {
  auto sent = sent_guest({"mem0", "mem1"}, 4, 2);
  vmm::SnapshotStore snapshots(g_dir + "/snapshots", calls());
  // The second pod is down when the snapshot is taken.
  auto taken = snapshots.take(record("half", {"mem0", "lost"}), {}, {}, sent);
  cr_assert(!taken.has_value());
  cr_expect_eq(taken.error().code(), ErrorCode::kUnavailable);
  cr_expect(taken.error().message().find("lost") != std::string::npos, "%s", taken.error().message().c_str());
  cr_expect_eq(versions("mem0"), 0u);
  cr_expect(snapshots.list().empty());
  cr_expect(!std::filesystem::exists(g_dir + "/snapshots/half.state"));
  cr_expect(snapshots.check_new_name("half").has_value());
}

Test(snapshot_store, a_failed_fork_deletes_the_regions_it_made) {
  auto sent = sent_guest({"mem0", "mem1"}, 4, 3);
  vmm::SnapshotStore snapshots(g_dir + "/snapshots", calls());
  cr_assert(snapshots.take(record("s", {"mem0", "mem1"}), {}, {}, sent).has_value());
  auto snapshot = snapshots.find("s");
  cr_assert(snapshot.has_value());
  snapshot->record.memory_pods[1] = "lost";
  auto clone = snapshots.fork(*snapshot, "clone", true);
  cr_assert(!clone.has_value());
  cr_expect_eq(store("mem0").stats().regions, 1u, "the clone's region on mem0 was deleted");
}

Test(snapshot_store, destroying_the_store_releases_every_version) {
  auto sent = sent_guest({"mem0", "mem1"}, 4, 4);
  {
    vmm::SnapshotStore snapshots(g_dir + "/snapshots", calls());
    cr_assert(snapshots.take(record("a", {"mem0", "mem1"}), {}, {}, sent).has_value());
    cr_assert(snapshots.take(record("b", {"mem0", "mem1"}), {}, {}, sent).has_value());
    cr_expect_eq(versions("mem0"), 2u);
  }
  cr_expect_eq(versions("mem0"), 0u);
  cr_expect_eq(versions("mem1"), 0u);
}
