// StripeLayout: hand-checked pieces, then properties over many offsets,
// lengths, pod counts and stripe sizes: map() tiles the range in file order
// within single stripes, and pod_region_size() holds whatever map() asks of
// each pod's region.
#include <criterion/criterion.h>

#include <random>
#include <vector>

#include <vmpod/cpuserver/stripe_layout.h>

using namespace vmpod;
using namespace vmpod::cpuserver;

namespace {

constexpr unsigned long long kKiB = 1024;

StripeLayout layout(size_t pods, uint64_t stripe) {
  auto l = StripeLayout::create(pods, stripe);
  cr_assert(l.has_value(), "create(%zu, %llu): %s", pods, static_cast<unsigned long long>(stripe),
            l ? "" : l.error().to_string().c_str());
  return *l;
}

// Checks every property of map(offset, length); returns the pieces.
std::vector<StripeExtent> check_map(const StripeLayout& l, uint64_t offset, uint64_t length) {
  auto pieces = l.map(offset, length);
  const uint64_t stripe = l.stripe_bytes();
  const size_t pods = l.pods();
  uint64_t position = offset;
  for (const StripeExtent& e : pieces) {
    cr_assert_eq(e.file_offset, position, "pieces of %llu+%llu are not contiguous",
                 static_cast<unsigned long long>(offset), static_cast<unsigned long long>(length));
    cr_assert_gt(e.length, 0u, "empty piece");
    uint64_t index = e.file_offset / stripe;
    cr_assert_eq((e.file_offset + e.length - 1) / stripe, index, "piece crosses a stripe");
    cr_assert_eq(e.pod, index % pods, "stripe %llu on pod %zu", static_cast<unsigned long long>(index),
                 e.pod);
    cr_assert_eq(e.pod_offset, (index / pods) * stripe + e.file_offset % stripe,
                 "stripe %llu at pod offset %llu", static_cast<unsigned long long>(index),
                 static_cast<unsigned long long>(e.pod_offset));
    position += e.length;
  }
  cr_assert_eq(position, offset + length, "pieces cover %llu bytes of %llu",
               static_cast<unsigned long long>(position - offset),
               static_cast<unsigned long long>(length));
  // No more pieces than stripes touched.
  if (length > 0) {
    cr_assert_eq(pieces.size(), (offset + length - 1) / stripe - offset / stripe + 1);
  }
  return pieces;
}

}  // namespace

Test(stripe_layout, create_checks_arguments) {
  cr_expect(!StripeLayout::create(0, 64 * kKiB).has_value(), "0 pods accepted");
  cr_expect_eq(StripeLayout::create(0, 64 * kKiB).error().code(), ErrorCode::kInvalidArgument);
  for (uint64_t stripe : {0ull, 1ull, 512ull, 4095ull, 4097ull, 6144ull, 65535ull, (1ull << 20) + 512}) {
    auto l = StripeLayout::create(2, stripe);
    cr_expect(!l.has_value(), "stripe %llu accepted", static_cast<unsigned long long>(stripe));
    if (!l) cr_expect_eq(l.error().code(), ErrorCode::kInvalidArgument);
  }
  for (uint64_t stripe : {4096ull, 8192ull, 12288ull, 64 * kKiB, 1ull << 20, 1ull << 30}) {
    cr_expect(StripeLayout::create(3, stripe).has_value(), "stripe %llu refused",
              static_cast<unsigned long long>(stripe));
  }
  StripeLayout l = layout(5, 8192);
  cr_expect_eq(l.pods(), 5u);
  cr_expect_eq(l.stripe_bytes(), 8192u);
}

Test(stripe_layout, hand_checked_pieces) {
  StripeLayout l = layout(2, 64 * kKiB);
  // Within stripe 0.
  auto a = l.map(100, 1000);
  cr_assert_eq(a.size(), 1u);
  cr_expect_eq(a[0].pod, 0u);
  cr_expect_eq(a[0].pod_offset, 100u);
  cr_expect_eq(a[0].length, 1000u);
  // From the end of stripe 0 into stripe 1 (pod 1, its offset 0), then
  // stripe 2 (pod 0, after its stripe 0).
  auto b = l.map(60 * kKiB, 72 * kKiB);
  cr_assert_eq(b.size(), 3u);
  cr_expect(b[0].pod == 0 && b[0].pod_offset == 60 * kKiB && b[0].length == 4 * kKiB);
  cr_expect(b[1].pod == 1 && b[1].pod_offset == 0 && b[1].length == 64 * kKiB &&
            b[1].file_offset == 64 * kKiB);
  cr_expect(b[2].pod == 0 && b[2].pod_offset == 64 * kKiB && b[2].length == 4 * kKiB &&
            b[2].file_offset == 128 * kKiB);
  // Stripe 7 of three pods: pod 1, third stripe there.
  StripeLayout three = layout(3, 4096);
  auto c = three.map(7 * 4096 + 5, 10);
  cr_assert_eq(c.size(), 1u);
  cr_expect_eq(c[0].pod, 1u);
  cr_expect_eq(c[0].pod_offset, 2 * 4096u + 5);
  cr_expect(l.map(12345, 0).empty());
}

Test(stripe_layout, one_pod_is_the_identity) {
  StripeLayout l = layout(1, 4096);
  for (const StripeExtent& e : check_map(l, 1000, 100000)) {
    cr_expect_eq(e.pod, 0u);
    cr_expect_eq(e.pod_offset, e.file_offset);
  }
  cr_expect_eq(l.pod_region_size(0, 123457), 123457u);
}

Test(stripe_layout, map_properties) {
  std::mt19937_64 rng(20240611);
  for (size_t pods : {1u, 2u, 3u, 4u, 7u}) {
    for (uint64_t stripe : {4096ull, 12288ull, 64 * kKiB, 1ull << 20}) {
      StripeLayout l = layout(pods, stripe);
      for (int i = 0; i < 200; ++i) {
        uint64_t offset = rng() % (64 * stripe);
        if (i % 4 == 0) offset -= offset % stripe;  // aligned starts too
        uint64_t length = rng() % (6 * stripe * pods);
        if (i % 5 == 0) length = stripe - offset % stripe;  // to the end of a stripe
        check_map(l, offset, length);
      }
      // Far out in a terabyte file.
      check_map(l, (1ull << 40) - stripe / 2, 3 * stripe);
    }
  }
}

Test(stripe_layout, pod_regions_sum_to_the_file_and_hold_every_piece) {
  std::mt19937_64 rng(7);
  for (size_t pods : {1u, 2u, 3u, 5u}) {
    for (uint64_t stripe : {4096ull, 64 * kKiB}) {
      StripeLayout l = layout(pods, stripe);
      std::vector<uint64_t> sizes;
      for (uint64_t n = 0; n <= 3 * pods + 1; ++n) {
        sizes.push_back(n * stripe);
        sizes.push_back(n * stripe + 1);
        sizes.push_back(n * stripe + stripe / 2);
        if (n > 0) sizes.push_back(n * stripe - 1);
      }
      for (int i = 0; i < 50; ++i) sizes.push_back(rng() % (20 * stripe * pods));
      for (uint64_t file_size : sizes) {
        std::vector<uint64_t> region(pods);
        uint64_t total = 0;
        for (size_t p = 0; p < pods; ++p) {
          region[p] = l.pod_region_size(p, file_size);
          total += region[p];
        }
        cr_assert_eq(total, file_size, "pods=%zu stripe=%llu file=%llu: regions sum to %llu", pods,
                     static_cast<unsigned long long>(stripe),
                     static_cast<unsigned long long>(file_size),
                     static_cast<unsigned long long>(total));
        // Each pod's region ends exactly where its last piece of the file ends.
        std::vector<uint64_t> needed(pods, 0);
        for (const StripeExtent& e : check_map(l, 0, file_size)) {
          needed[e.pod] = std::max(needed[e.pod], e.pod_offset + e.length);
        }
        for (size_t p = 0; p < pods; ++p) {
          cr_assert_eq(region[p], needed[p], "pods=%zu stripe=%llu file=%llu: pod %zu region %llu, "
                       "pieces need %llu", pods, static_cast<unsigned long long>(stripe),
                       static_cast<unsigned long long>(file_size), p,
                       static_cast<unsigned long long>(region[p]),
                       static_cast<unsigned long long>(needed[p]));
        }
        // Any sub-range of the file fits too.
        uint64_t offset = file_size ? rng() % file_size : 0;
        uint64_t length = file_size ? rng() % (file_size - offset + 1) : 0;
        for (const StripeExtent& e : check_map(l, offset, length)) {
          cr_assert_leq(e.pod_offset + e.length, region[e.pod]);
        }
      }
    }
  }
}

Test(stripe_layout, regions_grow_monotonically_with_the_file) {
  StripeLayout l = layout(3, 4096);
  std::vector<uint64_t> last(3, 0);
  for (uint64_t size = 0; size < 20 * 4096; size += 1000) {
    for (size_t p = 0; p < 3; ++p) {
      uint64_t now = l.pod_region_size(p, size);
      cr_assert_geq(now, last[p], "pod %zu shrank when the file grew to %llu", p,
                    static_cast<unsigned long long>(size));
      last[p] = now;
    }
  }
}
