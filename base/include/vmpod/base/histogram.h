// A lock-free latency histogram with power-of-two nanosecond buckets: cheap
// enough to record every page fault and every page-store operation.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

namespace vmpod {

class LatencyHistogram {
 public:
  static constexpr size_t kBuckets = 40;  // up to 2^40 ns, about 18 minutes

  void record(std::chrono::nanoseconds elapsed);
  std::vector<uint64_t> snapshot() const;

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
};

// The value below which `quantile` of the samples lie, in microseconds,
// interpolated inside the bucket; 0 when there are no samples.
double histogram_quantile_us(const std::vector<uint64_t>& buckets, double quantile);
uint64_t histogram_count(const std::vector<uint64_t>& buckets);
// The value at quantile q (clamped to 0..1) of the samples themselves, by
// nearest rank; 0 when there are none.
double percentile(std::vector<double> samples, double q);

// Measures the scope it lives in into a histogram.
class ScopedLatency {
 public:
  explicit ScopedLatency(LatencyHistogram& histogram)
      : histogram_(histogram), start_(std::chrono::steady_clock::now()) {}
  ~ScopedLatency() { histogram_.record(std::chrono::steady_clock::now() - start_); }
  ScopedLatency(const ScopedLatency&) = delete;
  ScopedLatency& operator=(const ScopedLatency&) = delete;

 private:
  LatencyHistogram& histogram_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace vmpod
