// A Memserver started in-process, driven through pods::MemoryPodClient over
// its unix control socket and a loopback fabric (tcp and shm): regions,
// page I/O, refusals, a full pod, and losing the pod under a client.
#include <criterion/criterion.h>

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include <vmpod/memserver/memserver.h>
#include <vmpod/pods/memory_client.h>

#include "crash_cleanup.h"

using namespace vmpod;
using namespace vmpod::memserver;
using namespace std::chrono_literals;
using pods::MemoryPodClient;
using pods::RegionHandle;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;

// Held outside the test body: a failed assertion skips destructors, and
// fini must still stop the pod and remove its socket.
std::string g_dir;
// Never destroyed at exit: libfabric's psm library turns a crash into exit(),
// and these destructors would then wait on the crashed thread's call.
std::unique_ptr<Memserver>& g_server = *new std::unique_ptr<Memserver>;
std::vector<std::unique_ptr<MemoryPodClient>>& g_clients =
    *new std::vector<std::unique_ptr<MemoryPodClient>>;
crash_cleanup::Watchdog g_watchdog;  // removes g_dir after a crash

void setup() {
  char tmpl[] = "/tmp/vmpod-memserver-XXXXXX";
  cr_assert_not_null(::mkdtemp(tmpl));
  g_dir = tmpl;
  cr_assert(g_watchdog.start(g_dir), "cannot start the cleanup watchdog");
}

void teardown() {
  g_clients.clear();
  g_server.reset();
  if (!g_dir.empty()) std::filesystem::remove_all(g_dir);
  g_watchdog.stop();
}

net::FabricConfig fabric(net::FabricProvider provider) {
  net::FabricConfig config;
  config.provider = provider;
  config.node = "127.0.0.1";
  return config;
}

Memserver& start(net::FabricProvider provider, uint64_t capacity = 16 * kMiB) {
  MemserverConfig config;
  config.pod_id = "mem-test";
  config.control.kind = net::SocketAddress::Kind::kUnix;
  config.control.path = g_dir + "/control.sock";
  config.fabric = fabric(provider);
  config.capacity_bytes = capacity;
  auto server = Memserver::start(config);
  cr_assert(server.has_value(), "memserver: %s", server ? "" : server.error().to_string().c_str());
  g_server = std::move(*server);
  return *g_server;
}

MemoryPodClient& connect(net::FabricProvider provider) {
  MemoryPodClient::Options options;
  options.fabric = fabric(provider);
  auto client = MemoryPodClient::connect(g_server->control_address(), options);
  cr_assert(client.has_value(), "connect: %s", client ? "" : client.error().to_string().c_str());
  g_clients.push_back(std::move(*client));
  return *g_clients.back();
}

std::vector<std::byte> pattern(size_t size, uint32_t seed) {
  std::vector<std::byte> out(size);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : out) {
    x = x * 1103515245u + 12345u;
    b = static_cast<std::byte>((x >> 16) | 1);
  }
  return out;
}

bool all_zero(std::span<const std::byte> bytes) {
  for (std::byte b : bytes) {
    if (b != std::byte{0}) return false;
  }
  return true;
}

#define ASSERT_OK(expr)                                                                   \
  do {                                                                                    \
    auto assert_ok_ = (expr);                                                             \
    cr_assert(assert_ok_.has_value(), "%s: %s", #expr,                                    \
              assert_ok_ ? "" : assert_ok_.error().to_string().c_str());                  \
  } while (0)

#define ASSERT_CODE(expr, want)                                                           \
  do {                                                                                    \
    auto assert_code_ = (expr);                                                           \
    cr_assert(!assert_code_.has_value(), "%s succeeded", #expr);                          \
    cr_assert_eq(assert_code_.error().code(), (want), "%s: %s", #expr,                    \
                 assert_code_.error().to_string().c_str());                               \
  } while (0)

void region_lifecycle(net::FabricProvider provider) {
  Memserver& server = start(provider);
  MemoryPodClient& client = connect(provider);
  cr_expect_eq(client.pod_id(), std::string("mem-test"));
  cr_expect(client.alive());

  auto region = client.create_region(4 * kMiB, "unit-test");
  ASSERT_OK(region);
  auto big = pattern(kMiB, 1);
  auto small = pattern(kPage, 2);
  ASSERT_OK(client.write(*region, kMiB, big));
  ASSERT_OK(client.write(*region, 3 * kMiB, small));

  std::vector<std::byte> got(kMiB);
  ASSERT_OK(client.read(*region, kMiB, got));
  cr_expect(got == big, "1 MiB read differs from what was written");
  std::vector<std::byte> page(kPage);
  ASSERT_OK(client.read(*region, 3 * kMiB, page));
  cr_expect(page == small);
  ASSERT_OK(client.read(*region, 0, page));
  cr_expect(all_zero(page), "an unwritten page is not zero");
  // An unaligned read across the end of the big write.
  std::vector<std::byte> edge(100);
  ASSERT_OK(client.read(*region, 2 * kMiB - 50, edge));
  cr_expect(std::equal(edge.begin(), edge.begin() + 50, big.end() - 50));
  cr_expect(all_zero(std::span(edge).subspan(50)));

  auto stats = client.stats();
  ASSERT_OK(stats);
  cr_expect_eq(stats->pod_id, std::string("mem-test"));
  cr_expect_eq(stats->capacity_pages, 16 * kMiB / kPage);
  cr_expect_eq(stats->regions, 1u);
  cr_expect_eq(stats->pages_held, 257u);
  cr_expect_eq(stats->writes, 2u);
  cr_expect_eq(stats->bytes_written, kMiB + kPage);
  cr_expect_eq(stats->reads, 4u);
  cr_expect_eq(stats->bytes_read, kMiB + 2 * kPage + 100);
  cr_expect_eq(stats->refused, 0u);
  cr_expect_eq(histogram_count(stats->read_latency), 4u);
  cr_expect_eq(histogram_count(stats->write_latency), 2u);
  // The client's view matches the store's.
  cr_expect_eq(server.store().stats().pages_held, stats->pages_held);
  cr_expect_eq(stats->region_pages, 0u, "no region named, none counted");

  // region_pages counts only the regions named, and only with their tokens.
  auto other = client.create_region(kMiB, "unit-test-other");
  ASSERT_OK(other);
  ASSERT_OK(client.write(*other, 0, small));
  pods::RegionHandle forged = *region;
  forged.token[0] ^= 1;
  auto counted = client.stats(std::vector<pods::RegionHandle>{*region});
  ASSERT_OK(counted);
  cr_expect_eq(counted->region_pages, 257u);
  cr_expect_eq(counted->pages_held, 258u);
  counted = client.stats(std::vector<pods::RegionHandle>{*region, *other});
  ASSERT_OK(counted);
  cr_expect_eq(counted->region_pages, 258u);
  counted = client.stats(std::vector<pods::RegionHandle>{forged, *other});
  ASSERT_OK(counted);
  cr_expect_eq(counted->region_pages, 1u, "a wrong token counts nothing");
  ASSERT_OK(client.delete_region(*other));

  // Discard the second half of the big write.
  ASSERT_OK(client.discard(*region, kMiB + kMiB / 2, kMiB / 2));
  ASSERT_OK(client.read(*region, kMiB, got));
  cr_expect(std::equal(got.begin(), got.begin() + kMiB / 2, big.begin()));
  cr_expect(all_zero(std::span(got).subspan(kMiB / 2)));
  cr_expect_eq(client.stats()->pages_held, 129u);

  // Shrink below the small write, then grow: it reads zero.
  ASSERT_OK(client.resize_region(*region, 2 * kMiB));
  cr_expect_eq(client.stats()->pages_held, 128u);
  ASSERT_CODE(client.read(*region, 3 * kMiB, page), ErrorCode::kInvalidArgument);
  ASSERT_OK(client.resize_region(*region, 4 * kMiB));
  ASSERT_OK(client.read(*region, 3 * kMiB, page));
  cr_expect(all_zero(page));

  ASSERT_OK(client.delete_region(*region));
  stats = client.stats();
  ASSERT_OK(stats);
  cr_expect_eq(stats->regions, 0u);
  cr_expect_eq(stats->pages_held, 0u);
  ASSERT_CODE(client.read(*region, 0, page), ErrorCode::kPermissionDenied);
  cr_expect(client.alive(), "a refused request cost the connection");
}

void forged_token(net::FabricProvider provider) {
  start(provider);
  MemoryPodClient& client = connect(provider);
  auto region = client.create_region(kMiB, "victim");
  ASSERT_OK(region);
  auto secret = pattern(kPage, 3);
  ASSERT_OK(client.write(*region, 0, secret));

  RegionHandle forged = *region;
  forged.token[0] ^= 0x80;
  std::vector<std::byte> page(kPage);
  ASSERT_CODE(client.read(forged, 0, page), ErrorCode::kPermissionDenied);
  cr_expect(all_zero(page), "a refused read returned data");
  ASSERT_CODE(client.write(forged, 0, pattern(kPage, 4)), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.discard(forged, 0, kPage), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.resize_region(forged, 0), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.delete_region(forged), ErrorCode::kPermissionDenied);
  RegionHandle unknown{region->id + 1000, region->token};
  ASSERT_CODE(client.read(unknown, 0, page), ErrorCode::kPermissionDenied);

  auto stats = client.stats();
  ASSERT_OK(stats);
  cr_expect_eq(stats->refused, 6u);
  cr_expect_eq(stats->regions, 1u);
  ASSERT_OK(client.read(*region, 0, page));
  cr_expect(page == secret, "a forged request changed the region");

  // The real token works from another connection too: the token is the key.
  MemoryPodClient& other = connect(provider);
  std::vector<std::byte> again(kPage);
  ASSERT_OK(other.read(*region, 0, again));
  cr_expect(again == secret);
}

void pod_full(net::FabricProvider provider) {
  start(provider, 2 * kMiB);
  MemoryPodClient& client = connect(provider);
  auto a = client.create_region(4 * kMiB, "a");
  ASSERT_OK(a);
  ASSERT_OK(client.write(*a, 0, pattern(kMiB, 1)));
  ASSERT_OK(client.write(*a, kMiB, pattern(kMiB, 2)));
  ASSERT_CODE(client.write(*a, 2 * kMiB, pattern(kMiB, 3)), ErrorCode::kNoSpace);
  ASSERT_CODE(client.write(*a, 3 * kMiB, pattern(kPage, 3)), ErrorCode::kNoSpace);
  cr_expect(client.alive());
  // Freeing space makes writes succeed again.
  ASSERT_OK(client.discard(*a, 0, kMiB));
  ASSERT_OK(client.write(*a, 3 * kMiB, pattern(kMiB, 4)));
  std::vector<std::byte> got(kMiB);
  ASSERT_OK(client.read(*a, kMiB, got));
  cr_expect(got == pattern(kMiB, 2));
}

void loss_detected(net::FabricProvider provider) {
  start(provider);
  MemoryPodClient& client = connect(provider);
  auto region = client.create_region(kMiB, "doomed");
  ASSERT_OK(region);
  ASSERT_OK(client.write(*region, 0, pattern(kPage, 1)));
  cr_assert(client.alive());

  auto killed = std::chrono::steady_clock::now();
  g_server.reset();
  // A read issued at once, before anyone noticed, fails fast too: the
  // lost pod's in-flight calls are failed, not left to the 10 s timeout.
  // Not over shm: in one process the shm provider shares the server
  // endpoint's memory instead of mapping it, so a send to a server closed
  // in this process touches freed memory (a separate pod process's would
  // stay mapped).
  if (provider != net::FabricProvider::kShm) {
    std::vector<std::byte> first(kPage);
    auto early = client.read(*region, 0, first);
    auto early_took = std::chrono::steady_clock::now() - killed;
    cr_expect(!early.has_value(), "read from a destroyed pod succeeded");
    if (!early) {
      cr_expect_eq(early.error().code(), ErrorCode::kUnavailable, "%s",
                   early.error().to_string().c_str());
    }
    cr_expect(early_took < 3s, "first read after the pod died took %lld ms",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(early_took).count()));
  }
  while (client.alive() && std::chrono::steady_clock::now() - killed < 5s) {
    std::this_thread::sleep_for(10ms);
  }
  auto noticed = std::chrono::steady_clock::now() - killed;
  cr_assert(!client.alive(), "client still thinks the pod is alive after 5 s");
  cr_expect(noticed < 3s, "loss noticed after %lld ms",
            static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(noticed).count()));
  cr_expect(!client.lost_reason().empty());

  std::vector<std::byte> page(kPage);
  auto start_read = std::chrono::steady_clock::now();
  auto st = client.read(*region, 0, page);
  auto took = std::chrono::steady_clock::now() - start_read;
  cr_assert(!st.has_value(), "read from a lost pod succeeded");
  cr_expect_eq(st.error().code(), ErrorCode::kUnavailable, "%s", st.error().to_string().c_str());
  cr_expect(took < 1s, "read from a lost pod took %lld ms",
            static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  ASSERT_CODE(client.write(*region, 0, page), ErrorCode::kUnavailable);
  ASSERT_CODE(client.create_region(kMiB, "late"), ErrorCode::kUnavailable);
}

void versions_over_the_wire(net::FabricProvider provider) {
  start(provider);
  MemoryPodClient& client = connect(provider);
  auto base = client.create_region(kMiB, "base");
  ASSERT_OK(base);
  auto data = pattern(16 * kPage, 1);
  ASSERT_OK(client.write(*base, 0, data));

  auto frozen = client.freeze_region(*base);
  ASSERT_OK(frozen);
  cr_expect_eq(frozen->size, kMiB);
  cr_expect_eq(frozen->pages, 16u);
  cr_expect_eq(frozen->parent, 0u);
  const pods::VersionHandle version = frozen->version;
  // The base goes on writing; the version does not change.
  ASSERT_OK(client.write(*base, 0, pattern(kPage, 2)));

  std::vector<RegionHandle> forks;
  for (uint32_t i = 0; i < 4; ++i) {
    auto fork = client.fork_region(version, "clone" + std::to_string(i));
    ASSERT_OK(fork);
    forks.push_back(*fork);
    ASSERT_OK(client.write(*fork, kPage + i, pattern(kPage, 10 + i)));
  }
  for (uint32_t i = 0; i < 4; ++i) {
    std::vector<std::byte> got(16 * kPage);
    ASSERT_OK(client.read(forks[i], 0, got));
    auto want = data;
    auto mine = pattern(kPage, 10 + i);
    std::copy(mine.begin(), mine.end(), want.begin() + static_cast<ptrdiff_t>(kPage + i));
    cr_expect(got == want, "fork %u reads wrong", i);
  }
  // A snapshot of a fork names the version it came from.
  auto again = client.freeze_region(forks[0]);
  ASSERT_OK(again);
  cr_expect_eq(again->parent, version.id);
  auto described = client.describe_version(version);
  ASSERT_OK(described);
  cr_expect_eq(described->pages, 16u);
  cr_expect(described->version.token == version.token);
  auto stats = client.stats();
  ASSERT_OK(stats);
  cr_expect_eq(stats->versions, 2u);

  // Wrong tokens and unknown versions: one refusal, and nothing changes.
  pods::VersionHandle forged = version;
  forged.token[3] ^= 0x40;
  pods::VersionHandle unknown{version.id + 100, version.token};
  RegionHandle forged_region = *base;
  forged_region.token[0] ^= 1;
  ASSERT_CODE(client.fork_region(forged, "thief"), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.fork_region(unknown, "thief"), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.release_version(forged), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.describe_version(unknown), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.freeze_region(forged_region), ErrorCode::kPermissionDenied);
  ASSERT_CODE(client.fork_region(pods::VersionHandle{base->id, base->token}, "thief"),
              ErrorCode::kPermissionDenied);
  stats = client.stats();
  ASSERT_OK(stats);
  cr_expect_eq(stats->refused, 6u);
  cr_expect_eq(stats->versions, 2u);
  cr_expect_eq(stats->regions, 5u);
  cr_expect(client.alive(), "a refused request cost the connection");

  // Releasing and deleting everything returns every page.
  ASSERT_OK(client.release_version(version));
  ASSERT_CODE(client.describe_version(version), ErrorCode::kPermissionDenied);
  ASSERT_OK(client.release_version(again->version));
  for (const auto& fork : forks) ASSERT_OK(client.delete_region(fork));
  ASSERT_OK(client.delete_region(*base));
  stats = client.stats();
  ASSERT_OK(stats);
  cr_expect_eq(stats->pages_held, 0u);
  cr_expect_eq(stats->versions, 0u);
  cr_expect_eq(stats->regions, 0u);
}

}  // namespace

TestSuite(memserver, .init = setup, .fini = teardown, .timeout = 30);

Test(memserver, tcp_region_lifecycle) { region_lifecycle(net::FabricProvider::kTcp); }
Test(memserver, shm_region_lifecycle) { region_lifecycle(net::FabricProvider::kShm); }
Test(memserver, tcp_forged_token_refused) { forged_token(net::FabricProvider::kTcp); }
Test(memserver, shm_forged_token_refused) { forged_token(net::FabricProvider::kShm); }
Test(memserver, tcp_pod_full) { pod_full(net::FabricProvider::kTcp); }
Test(memserver, shm_pod_full) { pod_full(net::FabricProvider::kShm); }
Test(memserver, tcp_versions) { versions_over_the_wire(net::FabricProvider::kTcp); }
Test(memserver, shm_versions) { versions_over_the_wire(net::FabricProvider::kShm); }
Test(memserver, tcp_loss_detected) { loss_detected(net::FabricProvider::kTcp); }
Test(memserver, shm_loss_detected) { loss_detected(net::FabricProvider::kShm); }

Test(memserver, oversized_io_refused_by_the_client) {
  start(net::FabricProvider::kTcp);
  MemoryPodClient& client = connect(net::FabricProvider::kTcp);
  auto region = client.create_region(4 * kMiB, "big");
  ASSERT_OK(region);
  std::vector<std::byte> too_big(pods::kMaxPageIo + kPage);
  ASSERT_CODE(client.read(*region, 0, too_big), ErrorCode::kInvalidArgument);
  ASSERT_CODE(client.write(*region, 0, too_big), ErrorCode::kInvalidArgument);
  // A discard names a range: it may be larger.
  ASSERT_OK(client.discard(*region, 0, 4 * kMiB));
  cr_expect(client.alive());
}

Test(memserver, provider_mismatch_is_refused) {
  start(net::FabricProvider::kTcp);
  MemoryPodClient::Options options;
  options.fabric = fabric(net::FabricProvider::kShm);
  auto client = MemoryPodClient::connect(g_server->control_address(), options);
  cr_assert(!client.has_value(), "a shm client joined a tcp pod");
  cr_expect_eq(client.error().code(), ErrorCode::kInvalidArgument, "%s",
               client.error().to_string().c_str());
}

Test(memserver, reconnect_after_a_client_leaves) {
  start(net::FabricProvider::kTcp);
  RegionHandle region;
  {
    MemoryPodClient& first = connect(net::FabricProvider::kTcp);
    auto created = first.create_region(kMiB, "kept");
    ASSERT_OK(created);
    region = *created;
    ASSERT_OK(first.write(region, 0, pattern(kPage, 9)));
    g_clients.clear();
  }
  MemoryPodClient& second = connect(net::FabricProvider::kTcp);
  std::vector<std::byte> page(kPage);
  ASSERT_OK(second.read(region, 0, page));
  cr_expect(page == pattern(kPage, 9), "a region did not outlive its creator's connection");
}

Test(memserver, connect_to_nothing_fails) {
  MemoryPodClient::Options options;
  options.fabric = fabric(net::FabricProvider::kTcp);
  options.connect_timeout = 1s;
  net::SocketAddress nowhere{net::SocketAddress::Kind::kUnix, g_dir + "/none.sock", "", 0};
  auto client = MemoryPodClient::connect(nowhere, options);
  cr_assert(!client.has_value());
  cr_expect_eq(client.error().code(), ErrorCode::kUnavailable, "%s",
               client.error().to_string().c_str());
}
