#include <vmpod/base/histogram.h>

#include <algorithm>
#include <bit>
#include <cmath>

namespace vmpod {

void LatencyHistogram::record(std::chrono::nanoseconds elapsed) {
  uint64_t ns = elapsed.count() > 0 ? static_cast<uint64_t>(elapsed.count()) : 1;
  size_t bucket = static_cast<size_t>(std::bit_width(ns) - 1);
  if (bucket >= kBuckets) bucket = kBuckets - 1;
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
}

std::vector<uint64_t> LatencyHistogram::snapshot() const {
  std::vector<uint64_t> out(kBuckets);
  for (size_t i = 0; i < kBuckets; ++i) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

uint64_t histogram_count(const std::vector<uint64_t>& buckets) {
  uint64_t total = 0;
  for (uint64_t count : buckets) total += count;
  return total;
}

double histogram_quantile_us(const std::vector<uint64_t>& buckets, double quantile) {
  uint64_t total = histogram_count(buckets);
  if (total == 0) return 0;
  double rank = quantile * static_cast<double>(total);
  double seen = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (buckets[i] == 0) continue;
    if (seen + static_cast<double>(buckets[i]) >= rank) {
      double low = static_cast<double>(uint64_t{1} << i);
      double fraction = (rank - seen) / static_cast<double>(buckets[i]);
      return (low + fraction * low) / 1000.0;  // bucket i spans [low, 2 low)
    }
    seen += static_cast<double>(buckets[i]);
  }
  return static_cast<double>(uint64_t{1} << (buckets.size() - 1)) / 1000.0;
}

double percentile(std::vector<double> samples, double q) {
  if (samples.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(samples.size())));
  rank = std::clamp<size_t>(rank, 1, samples.size());
  std::nth_element(samples.begin(), samples.begin() + static_cast<long>(rank - 1), samples.end());
  return samples[rank - 1];
}

}  // namespace vmpod
