// Scratch benchmark for net/src/fabric.cc (not wired into meson). Build by hand:
//   g++ -std=c++20 -O2 -I net/include -I base/include tests/bench/fabric/fabric_bench.cc
//     build/net/libvmpod_net.a build/base/libvmpod_base.a
//     $(pkg-config --cflags --libs libfabric spdlog fmt) -pthread -o /tmp/fabric_bench
// Usage: fabric_bench [tcp|shm] [seconds]
// Server and client share this process (loopback / same-host shm).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <vmpod/net/fabric.h>

using namespace vmpod::net;
using Clock = std::chrono::steady_clock;

static std::vector<std::byte> g_source(2u << 20, std::byte{0x3c});

// Request: u64 reply length, u64 offset; reply copies from a "memory" buffer.
static size_t handler(uint64_t, std::span<const std::byte> req, std::span<std::byte> rep) {
  uint64_t len = 0, off = 0;
  std::memcpy(&len, req.data(), 8);
  std::memcpy(&off, req.data() + 8, 8);
  size_t n = std::min<size_t>(len, rep.size());
  std::memcpy(rep.data(), g_source.data() + (off % (1u << 20)), n);
  return n;
}

static bool one_call(FabricClient& c, size_t len, std::vector<std::byte>& r, uint64_t off) {
  uint64_t h[2] = {len, off};
  iovec iov{h, sizeof(h)};
  auto n = c.call(std::span<const iovec>(&iov, 1), std::span<std::byte>(r.data(), len),
                  std::chrono::seconds(5));
  if (!n) fprintf(stderr, "call failed: %s\n", n.error().to_string().c_str());
  return n && *n == len;
}

int main(int argc, char** argv) {
  if (getenv("BENCH_DEBUG")) spdlog::set_level(spdlog::level::debug);
  std::string prov = argc > 1 ? argv[1] : "tcp";
  double seconds = argc > 2 ? atof(argv[2]) : 2.0;
  FabricConfig cfg;
  cfg.provider = *parse_fabric_provider(prov);
  auto server = FabricServer::start(cfg, handler);
  if (!server) { fprintf(stderr, "%s\n", server.error().to_string().c_str()); return 1; }
  auto client = FabricClient::create(cfg);
  if (!client) { fprintf(stderr, "%s\n", client.error().to_string().c_str()); return 1; }
  auto h = (*server)->add_peer((*client)->local_address());
  (void)(*client)->connect((*server)->local_address(), *h);
  FabricClient& c = **client;

  // Latency: sequential 4 KiB reads.
  std::vector<std::byte> r(1u << 20);
  for (int i = 0; i < 2000; ++i) one_call(c, 4096, r, i * 4096);
  std::vector<double> us;
  auto end = Clock::now() + std::chrono::duration<double>(seconds);
  for (uint64_t i = 0; Clock::now() < end; ++i) {
    auto t0 = Clock::now();
    if (!one_call(c, 4096, r, i * 4096)) return 1;
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  printf("%s 4KiB rtt: n=%zu p50=%.1f us p99=%.1f us p99.9=%.1f us\n", prov.c_str(), us.size(),
         us[us.size() / 2], us[us.size() * 99 / 100], us[us.size() * 999 / 1000]);

  // Throughput at several concurrency levels and sizes.
  for (auto [size, threads] : {std::pair<size_t, int>{1u << 20, 1}, {1u << 20, 4}, {1u << 20, 8},
                               {256u << 10, 8}, {4096, 8}}) {
    std::atomic<uint64_t> calls{0};
    std::atomic<bool> failed{false};
    std::atomic<int64_t> max_us{0};
    std::atomic<uint64_t> slow{0};
    std::vector<std::thread> ts;
    auto t0 = Clock::now();
    auto stop_at = t0 + std::chrono::duration<double>(seconds);
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        std::vector<std::byte> rb(size);
        for (uint64_t i = 0; Clock::now() < stop_at; ++i) {
          auto c0 = Clock::now();
          if (!one_call(c, size, rb, (t * 7919 + i) * 4096)) { failed = true; return; }
          int64_t d = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c0).count();
          int64_t m = max_us.load();
          while (d > m && !max_us.compare_exchange_weak(m, d)) {}
          if (d > 20000) slow++;
          calls++;
        }
      });
    }
    for (auto& th : ts) th.join();
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    printf("%s %zu B x %d in flight: %.0f calls/s, %.2f GB/s, max %.1f ms, %llu calls > 20 ms%s\n",
           prov.c_str(), size, threads, calls / secs, calls * double(size) / secs / 1e9,
           max_us.load() / 1000.0, static_cast<unsigned long long>(slow.load()),
           failed ? " (FAILURES)" : "");
  }
  return 0;
}
