// PodfsCache: what a READ accounts, the chunk cap, FIFO eviction down to
// the 90% low-water mark, an unbounded cache, forget and clear.
#include <criterion/criterion.h>

#include <vector>

#include <vmpod/cpuserver/podfs_cache.h>

using namespace vmpod::cpuserver;

namespace {

constexpr uint64_t kChunk = PodfsCache::kChunkBytes;
constexpr uint64_t kPage = 4096;

CacheChunk chunk(uint64_t ino, uint64_t index) { return CacheChunk{ino, index * kChunk, kChunk}; }

}  // namespace

Test(podfs_cache, fetched_accounting) {
  PodfsCache cache(100 * kChunk);
  cr_expect_eq(cache.limit_bytes(), 100 * kChunk);
  cr_expect_eq(cache.cached_bytes(), 0u);
  cache.fetched(1, 0, kPage);
  cr_expect_eq(cache.cached_bytes(), kPage);
  cache.fetched(1, kPage, 2 * kPage);
  cr_expect_eq(cache.cached_bytes(), 3 * kPage);
  cache.fetched(2, 0, kPage);  // another file's chunk 0 is another chunk
  cr_expect_eq(cache.cached_bytes(), 4 * kPage);
  // A READ across a chunk boundary accounts in both chunks.
  cache.fetched(3, kChunk - kPage, 2 * kPage);
  cr_expect_eq(cache.cached_bytes(), 6 * kPage);
  // A large READ spanning whole chunks.
  cache.fetched(4, 0, 3 * kChunk);
  cr_expect_eq(cache.cached_bytes(), 6 * kPage + 3 * kChunk);
  cache.fetched(5, 0, 0);
  cr_expect_eq(cache.cached_bytes(), 6 * kPage + 3 * kChunk);
  cr_expect(!cache.over_limit());
  cr_expect(cache.take_evictions().empty());
}

Test(podfs_cache, reread_is_capped_at_the_chunk_size) {
  PodfsCache cache(100 * kChunk);
  for (int i = 0; i < 5; ++i) cache.fetched(1, 0, kChunk);
  cr_expect_eq(cache.cached_bytes(), kChunk);
  cache.fetched(1, kChunk / 2, kChunk / 2);
  cr_expect_eq(cache.cached_bytes(), kChunk);
  // A partly accounted chunk grows up to the cap, not past it.
  cache.fetched(2, 0, kChunk - kPage);
  cache.fetched(2, 0, 2 * kPage);
  cr_expect_eq(cache.cached_bytes(), 2 * kChunk);
}

Test(podfs_cache, evicts_oldest_first_down_to_low_water) {
  PodfsCache cache(4 * kChunk);
  cache.fetched(10, 0, kChunk);           // oldest
  cache.fetched(20, 5 * kChunk, kChunk);
  cache.fetched(10, 2 * kChunk, kChunk);
  cache.fetched(30, 0, kChunk);
  cr_expect_eq(cache.cached_bytes(), 4 * kChunk);
  cr_expect(!cache.over_limit(), "exactly at the limit is not over it");
  cr_expect(cache.take_evictions().empty());
  // Touching the oldest chunk again does not make it younger: FIFO by first fetch.
  cache.fetched(10, 0, kPage);
  cache.fetched(40, 0, kPage);
  cr_expect(cache.over_limit());
  // Limit 4 MiB, low water 4 MiB - 4 MiB / 10: the oldest chunk is enough.
  auto evicted = cache.take_evictions();
  cr_assert_eq(evicted.size(), 1u, "evicted %zu chunks", evicted.size());
  cr_expect(evicted[0] == chunk(10, 0), "evicted ino %llu offset %llu first",
            static_cast<unsigned long long>(evicted[0].ino),
            static_cast<unsigned long long>(evicted[0].offset));
  cr_expect_eq(cache.cached_bytes(), 3 * kChunk + kPage);
  cr_expect_leq(cache.cached_bytes(), 4 * kChunk - 4 * kChunk / 10);
  cr_expect(!cache.over_limit());
  cr_expect(cache.take_evictions().empty(), "a second take evicted more");
  // An evicted chunk fetched again is young again; the rest go in order.
  cache.fetched(10, 0, kChunk);
  cache.fetched(50, 0, kChunk);
  auto more = cache.take_evictions();
  std::vector<CacheChunk> want = {chunk(20, 5), chunk(10, 2)};
  cr_assert_eq(more.size(), want.size(), "evicted %zu chunks", more.size());
  for (size_t i = 0; i < want.size(); ++i) {
    cr_expect(more[i] == want[i], "eviction %zu: ino %llu offset %llu", i,
              static_cast<unsigned long long>(more[i].ino),
              static_cast<unsigned long long>(more[i].offset));
  }
  cr_expect_eq(cache.cached_bytes(), 3 * kChunk + kPage);
}

Test(podfs_cache, evicts_exactly_to_low_water) {
  // 10 chunks: the low-water mark is 9 chunks' worth.
  PodfsCache cache(10 * kChunk);
  for (uint64_t i = 0; i < 10; ++i) cache.fetched(1, i * kChunk, kChunk);
  cr_expect(!cache.over_limit());
  cache.fetched(1, 10 * kChunk, kPage);
  cr_expect(cache.over_limit());
  auto evicted = cache.take_evictions();
  // 10 MiB + 4 KiB -> drop chunks 0 and 1 to get to <= 9 MiB.
  cr_assert_eq(evicted.size(), 2u);
  cr_expect(evicted[0] == chunk(1, 0));
  cr_expect(evicted[1] == chunk(1, 1));
  cr_expect_eq(cache.cached_bytes(), 8 * kChunk + kPage);
}

Test(podfs_cache, limit_zero_never_evicts) {
  PodfsCache cache(0);
  for (uint64_t i = 0; i < 1000; ++i) cache.fetched(i % 7, i * kChunk, kChunk);
  cr_expect_eq(cache.cached_bytes(), 1000 * kChunk);
  cr_expect(!cache.over_limit());
  cr_expect(cache.take_evictions().empty());
  cr_expect_eq(cache.cached_bytes(), 1000 * kChunk);
}

Test(podfs_cache, forget_and_clear) {
  PodfsCache cache(3 * kChunk);
  cache.fetched(1, 0, kChunk);
  cache.fetched(2, 0, kChunk);
  cache.fetched(1, kChunk, kPage);
  cache.fetched(3, 0, kPage);
  cache.forget(1);
  cr_expect_eq(cache.cached_bytes(), kChunk + kPage);
  cache.forget(99);  // unknown file: nothing happens
  cr_expect_eq(cache.cached_bytes(), kChunk + kPage);
  // A forgotten file's chunks are not evicted later, nor counted twice.
  cache.fetched(1, 0, kPage);
  cr_expect_eq(cache.cached_bytes(), kChunk + 2 * kPage);
  cache.fetched(4, 0, 2 * kChunk);
  auto evicted = cache.take_evictions();
  cr_assert_geq(evicted.size(), 1u);
  cr_expect(evicted[0] == chunk(2, 0), "first eviction ino %llu",
            static_cast<unsigned long long>(evicted[0].ino));
  cache.clear();
  cr_expect_eq(cache.cached_bytes(), 0u);
  cr_expect(!cache.over_limit());
  cr_expect(cache.take_evictions().empty());
  cache.fetched(5, 0, kPage);
  cr_expect_eq(cache.cached_bytes(), kPage);
}
