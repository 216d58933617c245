// A guest whose compute pod may cache only a quarter of its RAM still runs
// correctly: podfs evicts (writing dirty pages back first) to stay under the
// bound while the guest writes and verifies a pattern as large as the bound.
// Over the shm provider, so both page transports boot a guest.
#include <criterion/criterion.h>

#include <thread>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;

Test(local_cache, guest_larger_than_its_cache_runs_correctly, .timeout = 300, .fini = vmpod::testing::stop_all) {
  testing::GuestOptions options;
  options.memory_bytes = 512ull << 20;
  options.local_cache_bytes = options.memory_bytes / 4;
  options.provider = net::FabricProvider::kShm;
  auto guest = testing::boot_guest("local-cache", options);

  auto result = testing::guest_run(*guest, "vmpod-memcheck --size-mib 64 --seed 11 --rounds 2", 240s);
  cr_assert_eq(result.exit_code, 0, "memcheck failed: %s", result.output.c_str());
  cr_assert(result.output.find("MEMCHECK verified ok") != std::string::npos, "%s", result.output.c_str());

  // The evictor runs beside the READs: one in flight may hold the cache over
  // its bound for as long as eviction takes, never longer than a moment
  // once the guest is idle.
  auto stats = guest->vmm->vm_stats("vm0");
  for (auto deadline = std::chrono::steady_clock::now() + 2s;
       stats && stats->podfs.cached_bytes > stats->podfs.cache_limit && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
    stats = guest->vmm->vm_stats("vm0");
  }
  cr_assert(stats.has_value(), "%s", stats ? "" : stats.error().to_string().c_str());
  const auto& podfs = stats->podfs;
  cr_assert_eq(podfs.cache_limit, options.local_cache_bytes);
  cr_assert_gt(podfs.evictions, 0u, "nothing was evicted under a %lu-byte bound", podfs.cache_limit);
  cr_assert_leq(podfs.cached_bytes, podfs.cache_limit, "cache %lu over its bound %lu", podfs.cached_bytes,
                podfs.cache_limit);
  // Evicted dirty pages went back to the pods and came back from them.
  uint64_t read_back = 0;
  for (const auto& pod : stats->memory_pods) read_back += pod.bytes_read;
  cr_assert_gt(read_back, 0u, "no page was fetched back from the memory pods");
}
