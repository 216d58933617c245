#include <vmpod/pods/memory_stats.h>

namespace vmpod::pods {

void histogram_message(const std::vector<uint64_t>& buckets, Vmpod__Pods__LatencyHistogram& out) {
  out.n_buckets = buckets.size();
  out.buckets = const_cast<uint64_t*>(buckets.data());
}

std::vector<uint64_t> histogram_buckets(const Vmpod__Pods__LatencyHistogram* message) {
  if (message == nullptr) return {};
  return std::vector<uint64_t>(message->buckets, message->buckets + message->n_buckets);
}

MemStatsMessage::MemStatsMessage(const MemoryPodStats& stats) : stats_(stats) {
  message.pod_id = const_cast<char*>(stats_.pod_id.c_str());
  message.capacity_pages = stats_.capacity_pages;
  message.pages_held = stats_.pages_held;
  message.regions = stats_.regions;
  message.reads = stats_.reads;
  message.writes = stats_.writes;
  message.bytes_read = stats_.bytes_read;
  message.bytes_written = stats_.bytes_written;
  message.refused = stats_.refused;
  histogram_message(stats_.read_latency, read_latency_);
  histogram_message(stats_.write_latency, write_latency_);
  message.read_latency = &read_latency_;
  message.write_latency = &write_latency_;
  message.region_pages = stats_.region_pages;
  message.versions = stats_.versions;
}

MemoryPodStats memory_pod_stats_from(const Vmpod__Pods__MemStatsReply& m) {
  return MemoryPodStats{m.pod_id, m.capacity_pages, m.pages_held, m.regions, m.reads, m.writes,
                        m.bytes_read, m.bytes_written, m.refused, histogram_buckets(m.read_latency),
                        histogram_buckets(m.write_latency), m.region_pages, m.versions};
}

}  // namespace vmpod::pods
