// PagePool and PageStore: the memory pod's DRAM tier. What a region reads
// back, what it holds, what it refuses, and that no page ever carries one
// region's data into another.
#include <criterion/criterion.h>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <vmpod/memserver/page_store.h>

using namespace vmpod;
using namespace vmpod::memserver;

namespace {

constexpr uint64_t kPage = 4096;

std::vector<std::byte> pattern(size_t size, uint32_t seed) {
  std::vector<std::byte> out(size);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : out) {
    x = x * 1103515245u + 12345u;
    b = static_cast<std::byte>((x >> 16) | 1);  // never zero
  }
  return out;
}

std::vector<std::byte> read(PageStore& store, const RegionInfo& r, uint64_t offset, size_t size) {
  std::vector<std::byte> out(size, std::byte{0xee});
  auto st = store.read(r.id, r.token, offset, out);
  cr_assert(st.has_value(), "read %llu+%zu: %s", static_cast<unsigned long long>(offset), size,
            st ? "" : st.error().to_string().c_str());
  return out;
}

void write(PageStore& store, const RegionInfo& r, uint64_t offset, std::span<const std::byte> data) {
  auto st = store.write(r.id, r.token, offset, data);
  cr_assert(st.has_value(), "write %llu+%zu: %s", static_cast<unsigned long long>(offset),
            data.size(), st ? "" : st.error().to_string().c_str());
}

bool all_zero(const std::vector<std::byte>& bytes) {
  for (std::byte b : bytes) {
    if (b != std::byte{0}) return false;
  }
  return true;
}

RegionInfo create(PageStore& store, uint64_t size, std::string owner = "test") {
  auto r = store.create_region(size, std::move(owner));
  cr_assert(r.has_value());
  return *r;
}

uint64_t held(PageStore& store, const RegionInfo& r) {
  auto info = store.region_info(r.id, r.token);
  cr_assert(info.has_value());
  return info->pages_held;
}

RegionToken wrong_token(const RegionToken& token) {
  RegionToken other = token;
  other[5] ^= 0x01;
  return other;
}

}  // namespace

// --- PagePool ---------------------------------------------------------------

Test(page_pool, capacity_is_a_hard_bound) {
  PagePool pool(3);
  cr_expect_eq(pool.capacity_pages(), 3u);
  std::set<std::byte*> pages;
  for (int i = 0; i < 3; ++i) {
    std::byte* page = pool.allocate();
    cr_assert_not_null(page);
    pages.insert(page);
  }
  cr_expect_eq(pages.size(), 3u, "a page was handed out twice");
  cr_expect_eq(pool.pages_in_use(), 3u);
  cr_expect_null(pool.allocate());
  cr_expect_eq(pool.pages_in_use(), 3u, "a refused allocation was counted");
  for (std::byte* page : pages) pool.release(page);
  cr_expect_eq(pool.pages_in_use(), 0u);
}

Test(page_pool, zero_capacity_refuses) {
  PagePool pool(0);
  cr_expect_null(pool.allocate());
}

Test(page_pool, pages_are_zeroed_and_reuse_is_zeroed) {
  PagePool pool(2);
  std::byte* page = pool.allocate();
  cr_assert_not_null(page);
  for (size_t i = 0; i < kPage; ++i) cr_assert_eq(page[i], std::byte{0});
  std::memset(page, 0xab, kPage);
  pool.release(page);
  std::byte* again = pool.allocate();
  cr_assert_not_null(again);
  cr_expect_eq(again, page, "a released page was not reused");
  for (size_t i = 0; i < kPage; ++i) {
    cr_assert_eq(again[i], std::byte{0}, "recycled page byte %zu is dirty", i);
  }
}

Test(page_pool, spans_several_slabs) {
  constexpr uint64_t kPages = 1300;  // more than two 512-page slabs
  PagePool pool(kPages);
  std::vector<std::byte*> pages;
  for (uint64_t i = 0; i < kPages; ++i) {
    std::byte* page = pool.allocate();
    cr_assert_not_null(page, "page %llu of %llu", static_cast<unsigned long long>(i),
                       static_cast<unsigned long long>(kPages));
    std::memset(page, static_cast<int>(i & 0xff) | 1, kPage);
    pages.push_back(page);
  }
  cr_expect_null(pool.allocate());
  std::set<std::byte*> distinct(pages.begin(), pages.end());
  cr_expect_eq(distinct.size(), kPages);
  // No two pages overlap: each still holds its own fill.
  for (uint64_t i = 0; i < kPages; ++i) {
    cr_assert_eq(pages[i][0], static_cast<std::byte>(static_cast<int>(i & 0xff) | 1));
    cr_assert_eq(pages[i][kPage - 1], static_cast<std::byte>(static_cast<int>(i & 0xff) | 1));
  }
  for (std::byte* page : pages) pool.release(page);
  cr_expect_eq(pool.pages_in_use(), 0u);
}

// --- PageStore --------------------------------------------------------------

Test(page_store, unwritten_region_reads_zeros_and_holds_nothing) {
  PageStore store(16 * kPage);
  RegionInfo r = create(store, 1 << 20, "vm-a");
  cr_expect_eq(r.size, 1u << 20);
  cr_expect_eq(r.owner, std::string("vm-a"));
  cr_expect(all_zero(read(store, r, 0, 1 << 20)));
  cr_expect(all_zero(read(store, r, 12345, 777)));
  cr_expect_eq(held(store, r), 0u);
  cr_expect_eq(store.stats().pages_held, 0u);
}

Test(page_store, regions_have_distinct_ids_and_tokens) {
  PageStore store(16 * kPage);
  RegionInfo a = create(store, kPage);
  RegionInfo b = create(store, kPage);
  cr_expect_neq(a.id, b.id);
  cr_expect(a.token != b.token, "two regions got the same token");
  cr_expect(a.token != RegionToken{}, "token is all zero");
  auto list = store.regions();
  cr_assert_eq(list.size(), 2u);
  cr_expect_eq(list[0].id, a.id);
  cr_expect_eq(list[1].id, b.id);
  cr_expect(list[1].token == b.token);
}

Test(page_store, round_trip_aligned_and_unaligned) {
  PageStore store(64 * kPage);
  RegionInfo r = create(store, 32 * kPage);
  struct Piece {
    uint64_t offset;
    size_t size;
  };
  const Piece pieces[] = {
      {0, kPage},              // one whole page
      {2 * kPage, 3 * kPage},  // several whole pages
      {6 * kPage + 100, 50},   // inside one page
      {8 * kPage - 10, 20},    // across a page boundary
      {10 * kPage + 1, 3 * kPage + 5},  // unaligned, spanning four pages
      {32 * kPage - 7, 7},     // the very end
  };
  uint32_t seed = 1;
  for (const Piece& p : pieces) write(store, r, p.offset, pattern(p.size, seed++));
  seed = 1;
  for (const Piece& p : pieces) {
    auto got = read(store, r, p.offset, p.size);
    cr_expect(got == pattern(p.size, seed++), "piece at %llu+%zu differs",
              static_cast<unsigned long long>(p.offset), p.size);
  }
  // Bytes around an unaligned write are untouched zeros.
  auto around = read(store, r, 6 * kPage, kPage);
  for (size_t i = 0; i < kPage; ++i) {
    if (i < 100 || i >= 150) cr_assert_eq(around[i], std::byte{0}, "byte %zu", i);
  }
  // A read spanning written and unwritten pages.
  auto span = read(store, r, kPage - 1, kPage + 2);
  cr_expect_eq(span[0], pattern(kPage, 1)[kPage - 1]);
  cr_expect(span[1] == std::byte{0} && span[kPage] == std::byte{0});
  cr_expect_eq(span[kPage + 1], pattern(3 * kPage, 2)[0]);
}

Test(page_store, overwrite_replaces_data) {
  PageStore store(8 * kPage);
  RegionInfo r = create(store, 4 * kPage);
  write(store, r, 0, pattern(4 * kPage, 1));
  write(store, r, kPage + 5, pattern(10, 2));
  auto got = read(store, r, 0, 4 * kPage);
  auto want = pattern(4 * kPage, 1);
  auto patch = pattern(10, 2);
  std::copy(patch.begin(), patch.end(), want.begin() + kPage + 5);
  cr_expect(got == want);
  cr_expect_eq(held(store, r), 4u);
}

Test(page_store, zero_page_write_drops_the_page) {
  PageStore store(8 * kPage);
  RegionInfo r = create(store, 4 * kPage);
  write(store, r, 0, pattern(3 * kPage, 1));
  cr_expect_eq(held(store, r), 3u);
  cr_expect_eq(store.stats().pages_held, 3u);
  std::vector<std::byte> zeros(kPage);
  write(store, r, kPage, zeros);
  cr_expect_eq(held(store, r), 2u);
  cr_expect_eq(store.stats().pages_held, 2u, "the page did not go back to the pool");
  cr_expect(all_zero(read(store, r, kPage, kPage)));
  cr_expect(read(store, r, 0, kPage) == pattern(kPage, 1));
  // A zero page where nothing was written allocates nothing.
  write(store, r, 3 * kPage, zeros);
  cr_expect_eq(held(store, r), 2u);
}

Test(page_store, wrong_token_and_unknown_region_are_refused_alike) {
  PageStore store(8 * kPage);
  RegionInfo r = create(store, 4 * kPage);
  write(store, r, 0, pattern(kPage, 1));
  RegionToken bad = wrong_token(r.token);
  std::vector<std::byte> buffer(kPage);
  uint64_t refused = 0;
  auto check = [&](const Status& st, const char* what) {
    cr_assert(!st.has_value(), "%s was allowed", what);
    cr_expect_eq(st.error().code(), ErrorCode::kPermissionDenied, "%s: %s", what,
                 st.error().to_string().c_str());
    cr_expect_eq(store.stats().refused, ++refused, "%s not counted as refused", what);
  };
  check(store.read(r.id, bad, 0, buffer), "read with a wrong token");
  check(store.write(r.id, bad, 0, buffer), "write with a wrong token");
  check(store.discard(r.id, bad, 0, kPage), "discard with a wrong token");
  check(store.resize_region(r.id, bad, 0), "resize with a wrong token");
  check(store.delete_region(r.id, bad), "delete with a wrong token");
  auto info = store.region_info(r.id, bad);
  check(info ? Status{} : Status(fail(info.error())), "region_info with a wrong token");
  check(store.read(r.id + 100, r.token, 0, buffer), "read of an unknown region");
  check(store.write(0, RegionToken{}, 0, buffer), "write of region 0");
  check(store.delete_region(r.id + 1, r.token), "delete of an unknown region");
  // One message for both, so a guess learns nothing.
  auto unknown = store.read(r.id + 100, r.token, 0, buffer);
  auto wrong = store.read(r.id, bad, 0, buffer);
  cr_expect(unknown.error().message().find("does not exist or the token is wrong") != std::string::npos);
  cr_expect(wrong.error().message().find("does not exist or the token is wrong") != std::string::npos);
  // Nothing was changed by the refused calls.
  cr_expect(read(store, r, 0, kPage) == pattern(kPage, 1));
  cr_expect_eq(held(store, r), 1u);
}

Test(page_store, range_beyond_size_is_invalid) {
  PageStore store(8 * kPage);
  RegionInfo r = create(store, 2 * kPage + 10);
  std::vector<std::byte> buffer(kPage);
  struct Row {
    uint64_t offset;
    uint64_t length;
  };
  const Row rows[] = {
      {2 * kPage + 11, 0},
      {2 * kPage, kPage},
      {2 * kPage + 10, 1},
      {UINT64_MAX, 1},
      {UINT64_MAX - 100, 200},
  };
  for (const Row& row : rows) {
    std::vector<std::byte> data(row.length, std::byte{1});
    auto rd = store.read(r.id, r.token, row.offset, data);
    auto wr = store.write(r.id, r.token, row.offset, data);
    auto ds = store.discard(r.id, r.token, row.offset, row.length);
    for (const Status* st : {&rd, &wr, &ds}) {
      cr_assert(!st->has_value(), "%llu+%llu allowed", static_cast<unsigned long long>(row.offset),
                static_cast<unsigned long long>(row.length));
      cr_expect_eq(st->error().code(), ErrorCode::kInvalidArgument);
    }
  }
  cr_expect(store.discard(r.id, r.token, 0, UINT64_MAX).error().code() == ErrorCode::kInvalidArgument);
  // Up to the end is fine, including an empty range at the end.
  write(store, r, 2 * kPage, pattern(10, 1));
  cr_expect(store.read(r.id, r.token, 2 * kPage + 10, {}).has_value());
  cr_expect_eq(held(store, r), 1u);
  cr_expect_eq(store.stats().refused, 0u, "a range error counted as refused");
}

Test(page_store, resize_shrink_drops_pages_and_zeroes_the_tail) {
  PageStore store(16 * kPage);
  RegionInfo r = create(store, 8 * kPage);
  write(store, r, 0, pattern(8 * kPage, 3));
  cr_expect_eq(held(store, r), 8u);
  // Shrink into the middle of page 2.
  uint64_t cut = 2 * kPage + 100;
  cr_assert(store.resize_region(r.id, r.token, cut).has_value());
  cr_expect_eq(held(store, r), 3u);
  cr_expect_eq(store.stats().pages_held, 3u);
  auto info = store.region_info(r.id, r.token);
  cr_expect_eq(info->size, cut);
  std::vector<std::byte> one(1);
  cr_expect(store.read(r.id, r.token, cut, one).error().code() == ErrorCode::kInvalidArgument);
  // Grow again: the old data past the cut must not come back.
  cr_assert(store.resize_region(r.id, r.token, 8 * kPage).has_value());
  auto got = read(store, r, 0, 8 * kPage);
  auto want = pattern(8 * kPage, 3);
  for (size_t i = 0; i < 8 * kPage; ++i) {
    std::byte expected = i < cut ? want[i] : std::byte{0};
    cr_assert_eq(got[i], expected, "byte %zu after shrink to %llu and regrow", i,
                 static_cast<unsigned long long>(cut));
  }
  // Shrinking to a page boundary and to zero.
  cr_assert(store.resize_region(r.id, r.token, kPage).has_value());
  cr_expect_eq(held(store, r), 1u);
  cr_assert(store.resize_region(r.id, r.token, 0).has_value());
  cr_expect_eq(held(store, r), 0u);
  cr_expect_eq(store.stats().pages_held, 0u);
}

Test(page_store, resize_shrink_across_tables) {
  // More than one 512-page second-level table.
  PageStore store(1200 * kPage);
  RegionInfo r = create(store, 1100 * kPage);
  for (uint64_t page : {0ull, 511ull, 512ull, 700ull, 1023ull, 1024ull, 1099ull}) {
    write(store, r, page * kPage, pattern(kPage, static_cast<uint32_t>(page)));
  }
  cr_expect_eq(held(store, r), 7u);
  cr_assert(store.resize_region(r.id, r.token, 600 * kPage).has_value());
  cr_expect_eq(held(store, r), 3u);
  cr_expect_eq(store.stats().pages_held, 3u);
  cr_assert(store.resize_region(r.id, r.token, 1100 * kPage).has_value());
  cr_expect(all_zero(read(store, r, 600 * kPage, 500 * kPage)));
  cr_expect(read(store, r, 512 * kPage, kPage) == pattern(kPage, 512));
}

Test(page_store, discard_whole_and_partial_pages) {
  PageStore store(16 * kPage);
  RegionInfo r = create(store, 8 * kPage);
  auto data = pattern(8 * kPage, 9);
  write(store, r, 0, data);
  // Discard from the middle of page 1 to the middle of page 4: pages 2 and 3
  // go, pages 1 and 4 are zeroed in part.
  uint64_t from = kPage + 1000, to = 4 * kPage + 2000;
  cr_assert(store.discard(r.id, r.token, from, to - from).has_value());
  cr_expect_eq(held(store, r), 6u);
  auto got = read(store, r, 0, 8 * kPage);
  for (size_t i = 0; i < 8 * kPage; ++i) {
    std::byte expected = (i >= from && i < to) ? std::byte{0} : data[i];
    cr_assert_eq(got[i], expected, "byte %zu", i);
  }
  // Discarding what was never written, or nothing, is fine.
  cr_expect(store.discard(r.id, r.token, 2 * kPage, 0).has_value());
  cr_expect(store.discard(r.id, r.token, 2 * kPage, 2 * kPage).has_value());
  // Discarding everything returns every page.
  cr_assert(store.discard(r.id, r.token, 0, 8 * kPage).has_value());
  cr_expect_eq(held(store, r), 0u);
  cr_expect_eq(store.stats().pages_held, 0u);
  cr_expect(all_zero(read(store, r, 0, 8 * kPage)));
}

Test(page_store, delete_returns_pages_to_the_pool) {
  PageStore store(16 * kPage);
  RegionInfo a = create(store, 8 * kPage);
  RegionInfo b = create(store, 8 * kPage);
  write(store, a, 0, pattern(5 * kPage, 1));
  write(store, b, 0, pattern(2 * kPage, 2));
  cr_expect_eq(store.stats().pages_held, 7u);
  cr_expect_eq(store.stats().regions, 2u);
  cr_assert(store.delete_region(a.id, a.token).has_value());
  cr_expect_eq(store.stats().pages_held, 2u);
  cr_expect_eq(store.stats().regions, 1u);
  // The deleted region is gone for good.
  std::vector<std::byte> buffer(kPage);
  auto st = store.read(a.id, a.token, 0, buffer);
  cr_assert(!st.has_value());
  cr_expect_eq(st.error().code(), ErrorCode::kPermissionDenied);
  cr_expect_eq(store.delete_region(a.id, a.token).error().code(), ErrorCode::kPermissionDenied);
  cr_expect(read(store, b, 0, 2 * kPage) == pattern(2 * kPage, 2));
}

Test(page_store, full_pool_refuses_then_recovers) {
  PageStore store(8 * kPage);
  RegionInfo hog = create(store, 6 * kPage);
  RegionInfo r = create(store, 8 * kPage);
  write(store, hog, 0, pattern(6 * kPage, 1));
  write(store, r, 0, pattern(2 * kPage, 2));
  cr_expect_eq(store.stats().pages_held, 8u);
  auto st = store.write(r.id, r.token, 2 * kPage, pattern(kPage, 3));
  cr_assert(!st.has_value(), "a write past capacity succeeded");
  cr_expect_eq(st.error().code(), ErrorCode::kNoSpace);
  cr_expect(st.error().message().find("full") != std::string::npos, "unclear message: %s",
            st.error().message().c_str());
  // Rewriting pages already held needs no new page.
  write(store, r, 0, pattern(2 * kPage, 4));
  // A zero page needs none either.
  write(store, r, 3 * kPage, std::vector<std::byte>(kPage));
  cr_expect_eq(store.stats().pages_held, 8u);
  cr_assert(store.delete_region(hog.id, hog.token).has_value());
  write(store, r, 2 * kPage, pattern(6 * kPage, 5));
  cr_expect_eq(store.stats().pages_held, 8u);
  cr_expect(read(store, r, 2 * kPage, 6 * kPage) == pattern(6 * kPage, 5));
  cr_expect(read(store, r, 0, 2 * kPage) == pattern(2 * kPage, 4));
}

Test(page_store, freed_pages_carry_no_data_into_another_region) {
  PageStore store(4 * kPage);
  RegionInfo a = create(store, 4 * kPage);
  write(store, a, 0, pattern(4 * kPage, 7));
  cr_assert(store.delete_region(a.id, a.token).has_value());
  RegionInfo b = create(store, 4 * kPage);
  // One byte per page makes b take each of a's old pages.
  for (uint64_t page = 0; page < 4; ++page) {
    std::byte one{0x11};
    write(store, b, page * kPage + 7, std::span(&one, 1));
  }
  cr_expect_eq(store.stats().pages_held, 4u);
  auto got = read(store, b, 0, 4 * kPage);
  for (size_t i = 0; i < got.size(); ++i) {
    std::byte expected = i % kPage == 7 ? std::byte{0x11} : std::byte{0};
    cr_assert_eq(got[i], expected, "byte %zu leaked from a deleted region", i);
  }
  // The same through a discard and a shrink.
  RegionInfo c = create(store, 0);
  write(store, b, 0, pattern(4 * kPage, 8));
  cr_assert(store.discard(b.id, b.token, 0, 2 * kPage).has_value());
  cr_assert(store.resize_region(c.id, c.token, 2 * kPage).has_value());
  std::byte one{0x22};
  write(store, c, 5, std::span(&one, 1));
  write(store, c, kPage + 5, std::span(&one, 1));
  auto page = read(store, c, 0, 2 * kPage);
  for (size_t i = 0; i < page.size(); ++i) {
    std::byte expected = i % kPage == 5 ? std::byte{0x22} : std::byte{0};
    cr_assert_eq(page[i], expected, "byte %zu leaked from a discarded page", i);
  }
}

Test(page_store, concurrent_regions_keep_their_data, .timeout = 60) {
  constexpr int kThreads = 4;
  constexpr uint64_t kPages = 64;
  PageStore store(kThreads * kPages * kPage);
  std::vector<RegionInfo> regions;
  for (int t = 0; t < kThreads; ++t) regions.push_back(create(store, kPages * kPage));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const RegionInfo& r = regions[static_cast<size_t>(t)];
      std::vector<std::byte> buffer;
      for (uint32_t round = 0; round < 200; ++round) {
        uint64_t page = (round * 7 + static_cast<uint32_t>(t)) % kPages;
        // Unaligned, spanning up to three pages.
        uint64_t offset = page * kPage + (round % 3) * 1000;
        size_t size = std::min<uint64_t>(kPage + round * 13, kPages * kPage - offset);
        auto data = pattern(size, round * 31 + static_cast<uint32_t>(t));
        if (!store.write(r.id, r.token, offset, data)) ++failures;
        buffer.assign(size, std::byte{0});
        if (!store.read(r.id, r.token, offset, buffer) || buffer != data) ++failures;
        // Also read another thread's region, concurrently with its writes.
        const RegionInfo& other = regions[static_cast<size_t>((t + 1) % kThreads)];
        std::vector<std::byte> peek(kPage);
        if (!store.read(other.id, other.token, page * kPage, peek)) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  cr_expect_eq(failures.load(), 0);
  auto stats = store.stats();
  cr_expect_eq(stats.writes, kThreads * 200u);
  cr_expect_eq(stats.reads, kThreads * 400u);
  cr_expect_eq(stats.refused, 0u);
}

Test(page_store, stats_count_traffic) {
  PageStore store(64 * kPage);
  auto empty = store.stats();
  cr_expect_eq(empty.capacity_pages, 64u);
  cr_expect_eq(empty.pages_held, 0u);
  cr_expect_eq(empty.regions, 0u);
  cr_expect_eq(empty.reads + empty.writes + empty.bytes_read + empty.bytes_written + empty.refused, 0u);
  cr_expect_eq(empty.read_latency.size(), LatencyHistogram::kBuckets);

  RegionInfo r = create(store, 16 * kPage);
  write(store, r, 0, pattern(3 * kPage, 1));
  write(store, r, 10, pattern(5, 2));
  (void)read(store, r, 0, 2 * kPage);
  (void)read(store, r, 1, 1);
  (void)read(store, r, 0, 0);
  std::vector<std::byte> buffer(kPage);
  (void)store.read(r.id, wrong_token(r.token), 0, buffer);           // refused
  (void)store.write(r.id, r.token, 16 * kPage, buffer);             // out of range
  auto s = store.stats();
  cr_expect_eq(s.regions, 1u);
  cr_expect_eq(s.pages_held, 3u);
  cr_expect_eq(s.writes, 2u);
  cr_expect_eq(s.bytes_written, 3 * kPage + 5);
  cr_expect_eq(s.reads, 3u);
  cr_expect_eq(s.bytes_read, 2 * kPage + 1);
  cr_expect_eq(s.refused, 1u);
  // Every call is timed, the refused ones too.
  cr_expect_eq(histogram_count(s.read_latency), 4u);
  cr_expect_eq(histogram_count(s.write_latency), 3u);
}

// A region is sparse: its size promises nothing about memory until written.
// A write near the end of a huge region must cost a page, not a table sized
// by the offset (which would take the whole memory pod down).
Test(page_store, write_at_the_end_of_a_huge_region, .timeout = 30) {
#if !defined(__SANITIZE_ADDRESS__)
  // Bound the damage should the store try to allocate by offset.
  rlimit limit{8ull << 30, 8ull << 30};
  ::setrlimit(RLIMIT_AS, &limit);
#endif
  PageStore store(16 * kPage);
  uint64_t size = 1ull << 62;
  RegionInfo r = create(store, size);
  auto data = pattern(kPage, 1);
  write(store, r, size - kPage, data);
  cr_expect(read(store, r, size - kPage, kPage) == data);
  cr_expect_eq(held(store, r), 1u);
  cr_assert(store.resize_region(r.id, r.token, size / 2).has_value());
  cr_expect_eq(held(store, r), 0u);
  cr_assert(store.delete_region(r.id, r.token).has_value());
  cr_expect_eq(store.stats().pages_held, 0u);
}

// A write that found its region just before the region was deleted must not
// leave pages behind that no region owns: the pool would shrink for good.
Test(page_store, delete_racing_writes_leaks_no_pages, .timeout = 60) {
  PageStore store(1024 * kPage);
  auto data = pattern(kPage, 1);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  int rounds = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    ++rounds;
    RegionInfo r = create(store, 64 * kPage);
    std::atomic<int> started{0};
    std::vector<std::thread> writers;
    for (int w = 0; w < 2; ++w) {
      writers.emplace_back([&, w] {
        ++started;
        // Keep writing until the region is gone.
        for (uint64_t i = 0;; ++i) {
          uint64_t page = (i * 2 + static_cast<uint64_t>(w)) % 64;
          if (!store.write(r.id, r.token, page * kPage, data)) break;
        }
      });
    }
    while (started.load() < 2) {
    }
    cr_assert(store.delete_region(r.id, r.token).has_value());
    for (auto& writer : writers) writer.join();
    cr_assert_eq(store.stats().pages_held, 0u,
                 "round %d: %llu pages held with no region left", rounds,
                 static_cast<unsigned long long>(store.stats().pages_held));
  }
}

// --- Versions ---------------------------------------------------------------

namespace {

VersionInfo freeze(PageStore& store, const RegionInfo& r) {
  auto v = store.freeze_region(r.id, r.token);
  cr_assert(v.has_value(), "freeze %llu: %s", static_cast<unsigned long long>(r.id),
            v ? "" : v.error().to_string().c_str());
  return *v;
}

RegionInfo fork(PageStore& store, const VersionInfo& v, std::string owner = "fork") {
  auto r = store.fork_region(v.id, v.token, std::move(owner));
  cr_assert(r.has_value(), "fork of %llu: %s", static_cast<unsigned long long>(v.id),
            r ? "" : r.error().to_string().c_str());
  return *r;
}

void release(PageStore& store, const VersionInfo& v) {
  auto st = store.release_version(v.id, v.token);
  cr_assert(st.has_value(), "release %llu: %s", static_cast<unsigned long long>(v.id),
            st ? "" : st.error().to_string().c_str());
}

void remove(PageStore& store, const RegionInfo& r) {
  cr_assert(store.delete_region(r.id, r.token).has_value());
}

uint64_t layers(PageStore& store, const RegionInfo& r) {
  auto info = store.region_info(r.id, r.token);
  cr_assert(info.has_value());
  return info->layers;
}

// A region of `pages` pages of pattern(seed), and the version it was frozen as.
struct Frozen {
  RegionInfo base;
  std::vector<std::byte> data;
  VersionInfo version;
};

Frozen frozen_region(PageStore& store, uint64_t pages, uint32_t seed) {
  Frozen out;
  out.base = create(store, pages * kPage);
  out.data = pattern(pages * kPage, seed);
  write(store, out.base, 0, out.data);
  out.version = freeze(store, out.base);
  return out;
}

// What a version reads, seen through a fork made for the look and dropped.
std::vector<std::byte> read_version(PageStore& store, const VersionInfo& v) {
  RegionInfo look = fork(store, v, "look");
  auto got = read(store, look, 0, v.size);
  remove(store, look);
  return got;
}

}  // namespace

Test(versions, a_frozen_version_never_changes) {
  PageStore store(64 * kPage);
  RegionInfo r = create(store, 8 * kPage + 100);
  auto data = pattern(8 * kPage + 100, 1);
  write(store, r, 0, data);
  VersionInfo v = freeze(store, r);
  cr_expect_eq(v.size, 8 * kPage + 100);
  cr_expect_eq(v.pages_held, 9u);
  cr_expect_eq(v.parent, 0u);
  cr_expect(v.token != r.token && v.token != RegionToken{});
  cr_expect_eq(held(store, r), 0u, "the frozen pages still count as the region's own");
  cr_expect_eq(store.stats().versions, 1u);
  // The region goes on; every kind of change leaves the version alone.
  write(store, r, 0, pattern(2 * kPage, 2));
  write(store, r, 3 * kPage + 5, pattern(10, 3));
  write(store, r, 4 * kPage, std::vector<std::byte>(kPage));
  cr_assert(store.discard(r.id, r.token, 5 * kPage, 2 * kPage).has_value());
  cr_assert(store.resize_region(r.id, r.token, kPage + 1).has_value());
  cr_assert(store.resize_region(r.id, r.token, 16 * kPage).has_value());
  cr_expect(read_version(store, v) == data, "the version changed under later writes");
  auto info = store.version_info(v.id, v.token);
  cr_assert(info.has_value());
  cr_expect_eq(info->pages_held, 9u);
  cr_expect_eq(info->size, v.size);
  // And the region reads what it wrote on top.
  auto head = pattern(2 * kPage, 2);
  head.resize(kPage + 1);
  cr_expect(read(store, r, 0, kPage + 1) == head);
  cr_expect(all_zero(read(store, r, kPage + 1, 15 * kPage - 1)));
}

Test(versions, four_forks_keep_their_own_writes) {
  PageStore store(256 * kPage);
  auto [base, data, v] = frozen_region(store, 16, 10);
  std::vector<RegionInfo> forks;
  for (uint32_t i = 0; i < 4; ++i) forks.push_back(fork(store, v, "clone" + std::to_string(i)));
  // Each fork writes the same places: whole pages, a partial page, a range
  // across a page boundary.
  for (uint32_t i = 0; i < 4; ++i) {
    write(store, forks[i], 2 * kPage, pattern(3 * kPage, 20 + i));
    write(store, forks[i], 8 * kPage + 17, pattern(33, 30 + i));
    write(store, forks[i], 11 * kPage - 8, pattern(16, 40 + i));
  }
  for (uint32_t i = 0; i < 4; ++i) {
    auto want = data;
    auto put = [&](uint64_t offset, const std::vector<std::byte>& bytes) {
      std::copy(bytes.begin(), bytes.end(), want.begin() + static_cast<ptrdiff_t>(offset));
    };
    put(2 * kPage, pattern(3 * kPage, 20 + i));
    put(8 * kPage + 17, pattern(33, 30 + i));
    put(11 * kPage - 8, pattern(16, 40 + i));
    cr_expect(read(store, forks[i], 0, 16 * kPage) == want, "fork %u reads wrong", i);
    // 3 whole pages, one partial, two across the boundary: six of its own.
    cr_expect_eq(held(store, forks[i]), 6u, "fork %u", i);
  }
  cr_expect(read(store, base, 0, 16 * kPage) == data, "the base region changed");
  cr_expect(read_version(store, v) == data, "the version changed");
  cr_expect_eq(store.stats().pages_held, 16u + 4 * 6u, "frozen pages were copied");
}

Test(versions, a_snapshot_of_a_fork_forks_again) {
  PageStore store(64 * kPage);
  auto [base, data, v1] = frozen_region(store, 4, 1);
  RegionInfo child = fork(store, v1);
  write(store, child, kPage, pattern(kPage, 2));
  VersionInfo v2 = freeze(store, child);
  cr_expect_eq(v2.parent, v1.id);
  cr_expect_eq(v2.pages_held, 1u);
  // The child goes on; the grandchild sees the child as it was frozen.
  write(store, child, 2 * kPage, pattern(kPage, 3));
  RegionInfo grandchild = fork(store, v2);
  write(store, grandchild, 3 * kPage + 1, pattern(1, 4));
  auto want = data;
  auto two = pattern(kPage, 2);
  std::copy(two.begin(), two.end(), want.begin() + kPage);
  auto grand_want = want;
  grand_want[3 * kPage + 1] = pattern(1, 4)[0];
  cr_expect(read(store, grandchild, 0, 4 * kPage) == grand_want);
  cr_expect_eq(layers(store, grandchild), 3u);
  // A snapshot of the grandchild names the fork's version as its parent.
  VersionInfo v3 = freeze(store, grandchild);
  cr_expect_eq(v3.parent, v2.id);
  cr_expect(read_version(store, v2) == want);
  cr_expect(read_version(store, v1) == data);
}

Test(versions, releasing_and_deleting_everything_frees_every_page) {
  PageStore store(128 * kPage);
  RegionInfo keep = create(store, 4 * kPage);
  write(store, keep, 0, pattern(2 * kPage, 1));
  uint64_t before = store.stats().pages_held;
  // Orders of release: version before fork, fork before version, a
  // snapshot chain several deep, forks of forks.
  RegionInfo r = create(store, 16 * kPage);
  write(store, r, 0, pattern(16 * kPage, 2));
  VersionInfo v1 = freeze(store, r);
  write(store, r, 0, pattern(4 * kPage, 3));
  VersionInfo v2 = freeze(store, r);
  write(store, r, 2 * kPage, pattern(4 * kPage, 4));
  RegionInfo a = fork(store, v1);
  write(store, a, 5 * kPage, pattern(kPage + 3, 5));
  VersionInfo va = freeze(store, a);
  RegionInfo b = fork(store, va);
  write(store, b, 0, pattern(kPage, 6));
  cr_expect_eq(store.stats().versions, 3u);
  release(store, v1);
  remove(store, r);
  release(store, va);
  remove(store, a);
  remove(store, b);
  cr_expect_gt(store.stats().pages_held, before, "v2 lost its pages");
  release(store, v2);
  cr_expect_eq(store.stats().pages_held, before, "%llu pages leaked",
               static_cast<unsigned long long>(store.stats().pages_held - before));
  cr_expect_eq(store.stats().versions, 0u);
  cr_expect_eq(store.stats().regions, 1u);
  cr_expect(read(store, keep, 0, 2 * kPage) == pattern(2 * kPage, 1));
}

Test(versions, released_layers_are_flattened_and_read_the_same) {
  PageStore store(256 * kPage);
  RegionInfo r = create(store, 32 * kPage);
  auto model = std::vector<std::byte>(32 * kPage);
  auto put = [&](uint64_t offset, const std::vector<std::byte>& bytes) {
    write(store, r, offset, bytes);
    std::copy(bytes.begin(), bytes.end(), model.begin() + static_cast<ptrdiff_t>(offset));
  };
  // Ten snapshots, each over the last, each released when the next is
  // taken: page 0 is rewritten every time, page 1 + i once.
  VersionInfo last{};
  for (uint32_t i = 0; i < 10; ++i) {
    put(0, pattern(kPage, 100 + i));
    put((1 + i) * kPage, pattern(kPage, 200 + i));
    VersionInfo v = freeze(store, r);
    if (i > 0) release(store, last);
    last = v;
  }
  store.flatten();
  cr_expect_leq(layers(store, r), 4u);
  cr_expect_eq(layers(store, r), 2u, "released layers were not merged");
  cr_expect(read(store, r, 0, 32 * kPage) == model);
  cr_expect(read_version(store, last) == model);
  // The nine old copies of page 0 went back to the pool.
  cr_expect_eq(store.stats().pages_held, 11u);
  auto info = store.version_info(last.id, last.token);
  cr_expect_eq(info->pages_held, 11u);
}

Test(versions, the_background_flattener_merges_without_being_asked) {
  PageStore store(256 * kPage);
  RegionInfo r = create(store, 8 * kPage);
  VersionInfo last{};
  for (uint32_t i = 0; i < 8; ++i) {
    write(store, r, 0, pattern(kPage, i));
    VersionInfo v = freeze(store, r);
    if (i > 0) release(store, last);
    last = v;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((layers(store, r) > 2 || store.stats().pages_held > 1) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  cr_expect_eq(layers(store, r), 2u);
  cr_expect_eq(store.stats().pages_held, 1u);
  cr_expect(read(store, r, 0, kPage) == pattern(kPage, 7));
}

// Layers that versions still name can not be merged: each version must go
// on reading as it did. Such a chain stays long, and still reads right.
Test(versions, held_versions_keep_their_layers) {
  PageStore store(64 * kPage);
  RegionInfo r = create(store, 8 * kPage);
  std::vector<VersionInfo> held_versions;
  for (uint32_t i = 0; i < 6; ++i) {
    write(store, r, i * kPage, pattern(kPage, i));
    held_versions.push_back(freeze(store, r));
  }
  store.flatten();
  cr_expect_eq(layers(store, r), 7u);
  for (uint32_t i = 0; i < 6; ++i) {
    auto got = read_version(store, held_versions[i]);
    for (uint32_t page = 0; page < 8; ++page) {
      auto slice = std::vector<std::byte>(got.begin() + page * kPage, got.begin() + (page + 1) * kPage);
      if (page <= i) {
        cr_expect(slice == pattern(kPage, page), "version %u page %u", i, page);
      } else {
        cr_expect(all_zero(slice), "version %u page %u", i, page);
      }
    }
  }
  for (const auto& v : held_versions) release(store, v);
  store.flatten();
  cr_expect_eq(layers(store, r), 1u, "with no version left the region is one layer again");
}

// A snapshot deleted while its VM runs on: the frozen pages merge into the
// region's own, and the ones it has rewritten since go back to the pool.
Test(versions, a_released_version_merges_into_its_region) {
  PageStore store(64 * kPage);
  RegionInfo r = create(store, 8 * kPage);
  for (uint32_t i = 0; i < 4; ++i) write(store, r, i * kPage, pattern(kPage, i));
  VersionInfo v = freeze(store, r);
  write(store, r, 0, pattern(kPage, 50));                 // rewritten
  write(store, r, kPage, std::vector<std::byte>(kPage));  // zeroed: a tombstone over the frozen page
  write(store, r, 5 * kPage, pattern(kPage, 55));         // new
  RegionInfo f = fork(store, v);
  release(store, v);
  store.flatten();
  cr_expect_eq(layers(store, r), 2u, "the fork still reads the frozen layer");
  cr_expect(store.delete_region(f.id, f.token).has_value());
  store.flatten();
  cr_expect_eq(layers(store, r), 1u);
  cr_expect(read(store, r, 0, kPage) == pattern(kPage, 50));
  cr_expect(all_zero(read(store, r, kPage, kPage)));
  cr_expect(read(store, r, 2 * kPage, 2 * kPage) == [] {
    auto both = pattern(kPage, 2);
    auto third = pattern(kPage, 3);
    both.insert(both.end(), third.begin(), third.end());
    return both;
  }());
  cr_expect(read(store, r, 5 * kPage, kPage) == pattern(kPage, 55));
  auto info = store.region_info(r.id, r.token);
  cr_assert(info.has_value());
  cr_expect_eq(store.stats().pages_held, info->pages_held, "nothing is held below the region");
  cr_expect_eq(store.stats().pages_held, 4u, "pages 0, 2, 3 and 5");
}

Test(versions, zero_writes_hide_the_frozen_page) {
  PageStore store(64 * kPage);
  auto [base, data, v] = frozen_region(store, 8, 5);
  RegionInfo f = fork(store, v);
  uint64_t pool_before = store.stats().pages_held;
  std::vector<std::byte> zeros(kPage);
  write(store, f, kPage, zeros);
  cr_assert(store.discard(f.id, f.token, 3 * kPage, 2 * kPage).has_value());
  cr_expect(all_zero(read(store, f, kPage, kPage)), "a zero write fell through to the base");
  cr_expect(all_zero(read(store, f, 3 * kPage, 2 * kPage)), "a discard fell through to the base");
  cr_expect_eq(held(store, f), 0u, "a tombstone counted as a page");
  cr_expect_eq(store.stats().pages_held, pool_before, "a tombstone took a page");
  // A partial write on a tombstone starts from zeros, not from the base.
  write(store, f, kPage + 10, pattern(5, 6));
  auto page = read(store, f, kPage, kPage);
  for (size_t i = 0; i < kPage; ++i) {
    std::byte want = (i >= 10 && i < 15) ? pattern(5, 6)[i - 10] : std::byte{0};
    cr_assert_eq(page[i], want, "byte %zu", i);
  }
  // Shrinking and growing back hides the base's pages past the cut.
  cr_assert(store.resize_region(f.id, f.token, 6 * kPage + 7).has_value());
  cr_assert(store.resize_region(f.id, f.token, 8 * kPage).has_value());
  auto tail = read(store, f, 6 * kPage, 2 * kPage);
  cr_expect(std::equal(tail.begin(), tail.begin() + 7, data.begin() + 6 * kPage));
  cr_expect(all_zero(std::vector<std::byte>(tail.begin() + 7, tail.end())),
            "the base's data came back past a shrink");
  cr_expect(read(store, f, 0, kPage) == std::vector<std::byte>(data.begin(), data.begin() + kPage));
  cr_expect(read(store, base, 0, 8 * kPage) == data);
}

Test(versions, partial_writes_copy_the_frozen_page_first) {
  PageStore store(64 * kPage);
  auto [r, data, v] = frozen_region(store, 4, 8);
  write(store, r, kPage + 100, pattern(10, 9));
  cr_assert(store.discard(r.id, r.token, 2 * kPage + 50, 20).has_value());
  cr_expect_eq(held(store, r), 2u);
  auto want = data;
  auto patch = pattern(10, 9);
  std::copy(patch.begin(), patch.end(), want.begin() + kPage + 100);
  std::fill(want.begin() + 2 * kPage + 50, want.begin() + 2 * kPage + 70, std::byte{0});
  cr_expect(read(store, r, 0, 4 * kPage) == want);
  cr_expect(read_version(store, v) == data);
}

Test(versions, wrong_tokens_and_unknown_versions_are_refused_alike) {
  PageStore store(16 * kPage);
  RegionInfo r = create(store, 4 * kPage);
  write(store, r, 0, pattern(kPage, 1));
  VersionInfo v = freeze(store, r);
  RegionToken bad = wrong_token(v.token);
  uint64_t refused = store.stats().refused;
  auto check = [&](const Status& st, const char* what) {
    cr_assert(!st.has_value(), "%s was allowed", what);
    cr_expect_eq(st.error().code(), ErrorCode::kPermissionDenied, "%s", what);
    cr_expect(st.error().message().find("does not exist or the token is wrong") != std::string::npos,
              "%s: %s", what, st.error().message().c_str());
    cr_expect_eq(store.stats().refused, ++refused, "%s not counted as refused", what);
  };
  auto status = [](const auto& result) { return result ? Status{} : Status(fail(result.error())); };
  check(status(store.fork_region(v.id, bad, "thief")), "fork with a wrong token");
  check(status(store.fork_region(v.id + 1, v.token, "thief")), "fork of an unknown version");
  check(store.release_version(v.id, bad), "release with a wrong token");
  check(store.release_version(v.id + 7, v.token), "release of an unknown version");
  check(status(store.version_info(v.id, bad)), "describe with a wrong token");
  check(status(store.freeze_region(r.id, wrong_token(r.token))), "freeze with a wrong token");
  // A region's token is no key to a version of the same number, nor the
  // other way round.
  check(status(store.fork_region(v.id, r.token, "thief")), "fork with the region's token");
  check(status(store.region_info(r.id, v.token)), "region_info with the version's token");
  cr_expect_eq(store.stats().versions, 1u);
  cr_expect_eq(store.stats().regions, 1u);
  release(store, v);
  check(store.release_version(v.id, v.token), "a second release");
  check(status(store.fork_region(v.id, v.token, "late")), "fork of a released version");
  remove(store, r);
  check(status(store.freeze_region(r.id, r.token)), "freeze of a deleted region");
}

Test(versions, a_full_pod_refuses_copy_on_write) {
  PageStore store(6 * kPage);
  auto [r, data, v] = frozen_region(store, 4, 1);
  RegionInfo f = fork(store, v);
  write(store, f, 0, pattern(2 * kPage, 2));
  cr_expect_eq(store.stats().pages_held, 6u);
  auto st = store.write(f.id, f.token, 2 * kPage + 1, pattern(1, 3));
  cr_assert(!st.has_value(), "copy-on-write past capacity succeeded");
  cr_expect_eq(st.error().code(), ErrorCode::kNoSpace);
  auto cut = store.resize_region(f.id, f.token, 3 * kPage + 5);
  cr_assert(!cut.has_value(), "a shrink that needs a page succeeded");
  cr_expect_eq(cut.error().code(), ErrorCode::kNoSpace);
  cr_expect(read(store, f, 2 * kPage, 2 * kPage) ==
                std::vector<std::byte>(data.begin() + 2 * kPage, data.end()),
            "a refused write or shrink changed the fork");
  // Zero writes and discards of whole pages need no page, even over the base.
  write(store, f, 3 * kPage, std::vector<std::byte>(kPage));
  cr_assert(store.discard(f.id, f.token, 2 * kPage, kPage).has_value());
  remove(store, r);
  release(store, v);
  remove(store, f);
  cr_expect_eq(store.stats().pages_held, 0u);
}

Test(versions, forks_read_and_write_while_the_flattener_runs, .timeout = 120) {
  constexpr uint64_t kPages = 32;
  constexpr int kForks = 4;
  PageStore store(2048 * kPage);
  auto [base, base_data, v] = frozen_region(store, kPages, 1);
  std::vector<RegionInfo> forks;
  for (int i = 0; i < kForks; ++i) forks.push_back(fork(store, v));
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  // The base region takes snapshot after snapshot, releasing the previous
  // one, so its chain keeps growing and being merged; it checks its own
  // contents after each.
  threads.emplace_back([&] {
    auto model = base_data;
    std::optional<VersionInfo> previous;
    for (uint32_t round = 0; round < 300; ++round) {
      uint64_t page = round % kPages;
      auto data = pattern(kPage / 2, 1000 + round);
      uint64_t offset = page * kPage + (round % 2) * (kPage / 2);
      if (!store.write(base.id, base.token, offset, data)) ++failures;
      std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(offset));
      auto frozen = store.freeze_region(base.id, base.token);
      if (!frozen) {
        ++failures;
        continue;
      }
      if (previous && !store.release_version(previous->id, previous->token)) ++failures;
      previous = *frozen;
      std::vector<std::byte> got(kPages * kPage);
      if (!store.read(base.id, base.token, 0, got) || got != model) ++failures;
    }
    if (previous) (void)store.release_version(previous->id, previous->token);
    done = true;
  });
  // Each fork writes its own pages and checks them, and checks that the
  // rest still reads as the version did.
  for (int i = 0; i < kForks; ++i) {
    threads.emplace_back([&, i] {
      const RegionInfo& f = forks[static_cast<size_t>(i)];
      auto model = base_data;
      for (uint32_t round = 0; !done || round < 50; ++round) {
        uint64_t offset = ((round * 5 + static_cast<uint32_t>(i)) % kPages) * kPage + round % 700;
        size_t size = std::min<uint64_t>(kPage + round % 3000, kPages * kPage - offset);
        auto data = pattern(size, static_cast<uint32_t>(i) * 100000 + round);
        if (!store.write(f.id, f.token, offset, data)) ++failures;
        std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(offset));
        std::vector<std::byte> got(kPages * kPage);
        if (!store.read(f.id, f.token, 0, got) || got != model) ++failures;
      }
    });
  }
  // Short-lived forks come and go, dropping their hold on the layers.
  threads.emplace_back([&] {
    while (!done) {
      auto look = store.fork_region(v.id, v.token, "look");
      std::vector<std::byte> got(kPages * kPage);
      if (!look || !store.read(look->id, look->token, 0, got) || got != base_data ||
          !store.delete_region(look->id, look->token)) {
        ++failures;
      }
    }
  });
  threads.emplace_back([&] {
    while (!done) store.flatten();
  });
  for (auto& thread : threads) thread.join();
  cr_expect_eq(failures.load(), 0);
  cr_expect(read_version(store, v) == base_data, "the forks' version changed");
  store.flatten();
  cr_expect_leq(layers(store, base), 3u);
  release(store, v);
  for (const auto& f : forks) remove(store, f);
  remove(store, base);
  cr_expect_eq(store.stats().pages_held, 0u);
}
