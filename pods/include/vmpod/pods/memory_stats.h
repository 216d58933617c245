// What a memory pod counts, and its wire message: the memory pod answers
// with it, and the compute pod and the vmm pass it on inside their own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory.pb-c.h"

namespace vmpod::pods {

struct MemoryPodStats {
  std::string pod_id;
  uint64_t capacity_pages = 0;
  uint64_t pages_held = 0;
  uint64_t regions = 0;
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t refused = 0;  // requests refused for a bad token or region
  std::vector<uint64_t> read_latency;   // LatencyHistogram buckets
  std::vector<uint64_t> write_latency;
  uint64_t region_pages = 0;  // held by the regions the stats request named
  uint64_t versions = 0;      // frozen versions alive
};

// Holds everything its message points into; never copied or moved.
class MemStatsMessage {
 public:
  explicit MemStatsMessage(const MemoryPodStats& stats);
  MemStatsMessage(const MemStatsMessage&) = delete;
  MemStatsMessage& operator=(const MemStatsMessage&) = delete;

  Vmpod__Pods__MemStatsReply message = VMPOD__PODS__MEM_STATS_REPLY__INIT;

 private:
  MemoryPodStats stats_;
  Vmpod__Pods__LatencyHistogram read_latency_ = VMPOD__PODS__LATENCY_HISTOGRAM__INIT;
  Vmpod__Pods__LatencyHistogram write_latency_ = VMPOD__PODS__LATENCY_HISTOGRAM__INIT;
};

MemoryPodStats memory_pod_stats_from(const Vmpod__Pods__MemStatsReply& message);

// LatencyHistogram buckets to and from their message; `out` points into
// `buckets`, which must outlive it.
void histogram_message(const std::vector<uint64_t>& buckets, Vmpod__Pods__LatencyHistogram& out);
std::vector<uint64_t> histogram_buckets(const Vmpod__Pods__LatencyHistogram* message);

}  // namespace vmpod::pods
