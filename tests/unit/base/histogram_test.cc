// LatencyHistogram buckets, histogram_quantile_us and percentile on
// samples whose answer is worked out by hand.
#include <criterion/criterion.h>

#include <cmath>
#include <thread>
#include <vector>

#include <vmpod/base/histogram.h>

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

bool near(double a, double b) { return std::fabs(a - b) < 1e-9 * std::max(1.0, std::fabs(b)); }

}  // namespace

Test(histogram, empty) {
  LatencyHistogram h;
  auto buckets = h.snapshot();
  cr_expect_eq(buckets.size(), LatencyHistogram::kBuckets);
  cr_expect_eq(histogram_count(buckets), 0u);
  cr_expect_eq(histogram_quantile_us(buckets, 0.5), 0.0);
  cr_expect_eq(histogram_quantile_us(buckets, 0.99), 0.0);
  cr_expect_eq(histogram_quantile_us({}, 0.5), 0.0);
}

Test(histogram, buckets_are_powers_of_two) {
  LatencyHistogram h;
  h.record(0ns);       // counted as 1 ns: bucket 0
  h.record(-5ns);      // a clock step backwards: bucket 0
  h.record(1ns);       // bucket 0
  h.record(2ns);       // bucket 1
  h.record(3ns);       // bucket 1
  h.record(1023ns);    // bucket 9
  h.record(1024ns);    // bucket 10
  h.record(std::chrono::hours(24 * 365));  // beyond 2^40 ns: the last bucket
  auto b = h.snapshot();
  cr_expect_eq(b[0], 3u);
  cr_expect_eq(b[1], 2u);
  cr_expect_eq(b[9], 1u);
  cr_expect_eq(b[10], 1u);
  cr_expect_eq(b[LatencyHistogram::kBuckets - 1], 1u);
  cr_expect_eq(histogram_count(b), 8u);
}

Test(histogram, quantiles_in_one_bucket) {
  std::vector<uint64_t> b(LatencyHistogram::kBuckets, 0);
  b[9] = 100;  // [512, 1024) ns
  cr_expect(near(histogram_quantile_us(b, 0.0), 0.512));
  cr_expect(near(histogram_quantile_us(b, 0.5), 0.768), "%f", histogram_quantile_us(b, 0.5));
  cr_expect(near(histogram_quantile_us(b, 1.0), 1.024), "%f", histogram_quantile_us(b, 1.0));
}

Test(histogram, quantiles_across_buckets) {
  std::vector<uint64_t> b(LatencyHistogram::kBuckets, 0);
  b[9] = 90;   // [512 ns, 1 us)
  b[19] = 10;  // [524 us, 1 ms)
  // p50: rank 50 of the first 90 in [512, 1024).
  cr_expect(near(histogram_quantile_us(b, 0.5), (512 + 512 * 50.0 / 90) / 1000),
            "p50 %f", histogram_quantile_us(b, 0.5));
  // p90 is the top of the first bucket.
  cr_expect(near(histogram_quantile_us(b, 0.9), 1.024), "p90 %f", histogram_quantile_us(b, 0.9));
  // p99: rank 99, 9 of the 10 slow ones.
  cr_expect(near(histogram_quantile_us(b, 0.99), (524288 + 524288 * 0.9) / 1000),
            "p99 %f", histogram_quantile_us(b, 0.99));
  double last = 0;
  for (double q = 0; q <= 1.0; q += 0.01) {
    double v = histogram_quantile_us(b, q);
    cr_expect(v >= last, "quantile %f = %f fell below %f", q, v, last);
    last = v;
  }
}

Test(histogram, recorded_samples_give_their_quantiles) {
  LatencyHistogram h;
  for (int i = 0; i < 99; ++i) h.record(std::chrono::microseconds(3));  // bucket 11: [2048, 4096)
  h.record(std::chrono::milliseconds(10));  // bucket 23
  auto b = h.snapshot();
  double p50 = histogram_quantile_us(b, 0.5);
  cr_expect(p50 >= 2.048 && p50 < 4.096, "p50 %f", p50);
  double p100 = histogram_quantile_us(b, 1.0);
  cr_expect(p100 >= 8388.608 && p100 <= 16777.216, "p100 %f", p100);
}

Test(histogram, scoped_latency_records_once) {
  LatencyHistogram h;
  {
    ScopedLatency timer(h);
    std::this_thread::sleep_for(2ms);
  }
  auto b = h.snapshot();
  cr_expect_eq(histogram_count(b), 1u);
  // At least 2 ms: bucket 20 ([1.05 ms, 2.1 ms)) or above.
  uint64_t fast = 0;
  for (size_t i = 0; i < 20; ++i) fast += b[i];
  cr_expect_eq(fast, 0u, "a 2 ms sleep landed below 1 ms");
}

Test(histogram, concurrent_records_are_all_counted) {
  LatencyHistogram h;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 10000; ++i) h.record(std::chrono::nanoseconds(1 << (t * 3)));
    });
  }
  for (auto& thread : threads) thread.join();
  auto b = h.snapshot();
  cr_expect_eq(histogram_count(b), 40000u);
  for (int t = 0; t < 4; ++t) cr_expect_eq(b[static_cast<size_t>(t * 3)], 10000u);
}

Test(histogram, percentile_of_samples_by_nearest_rank) {
  cr_expect_eq(percentile({}, 0.5), 0.0);
  cr_expect_eq(percentile({}, 0.99), 0.0);
  for (double q : {0.0, 0.01, 0.5, 0.99, 1.0}) cr_expect_eq(percentile({7.5}, q), 7.5, "one value, q %g", q);

  std::vector<double> hundred;
  for (int i = 100; i >= 1; --i) hundred.push_back(i);  // unsorted: 100 .. 1
  cr_expect_eq(percentile(hundred, 0.5), 50.0);
  cr_expect_eq(percentile(hundred, 0.99), 99.0);
  cr_expect_eq(percentile(hundred, 1.0), 100.0);
  cr_expect_eq(percentile(hundred, 0.0), 1.0);
  cr_expect_eq(percentile(hundred, 0.001), 1.0);
  cr_expect_eq(percentile(hundred, 0.011), 2.0, "nearest rank rounds up");

  std::vector<double> thousand;
  for (int i = 1; i <= 1000; ++i) thousand.push_back(i);
  cr_expect_eq(percentile(thousand, 0.99), 990.0);
  cr_expect_eq(percentile(thousand, 0.5), 500.0);

  cr_expect_eq(percentile({1, 2}, 0.5), 1.0);
  cr_expect_eq(percentile({3, 1, 2}, 0.5), 2.0);
  cr_expect_eq(percentile({1, 2, 3, 4}, 0.5), 2.0);
  cr_expect_eq(percentile({1, 2, 3, 4}, 0.99), 4.0);
  cr_expect_eq(percentile({5, 5, 5}, 0.5), 5.0);
  // q outside 0..1 is clamped.
  cr_expect_eq(percentile({1, 2, 3}, -1), 1.0);
  cr_expect_eq(percentile({1, 2, 3}, 2), 3.0);
}
