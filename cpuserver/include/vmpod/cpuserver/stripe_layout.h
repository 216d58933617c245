// How a podfs file is laid over its memory pods: stripe i of the file lives
// on pod i % N, at offset (i / N) * stripe in that pod's region, so a large
// READ spreads over every pod and each pod's region stays dense.
#pragma once

#include <cstdint>
#include <vector>

#include <vmpod/base/result.h>

namespace vmpod::cpuserver {

struct StripeExtent {
  size_t pod = 0;
  uint64_t pod_offset = 0;   // byte offset in that pod's region
  uint64_t file_offset = 0;  // byte offset in the file
  uint64_t length = 0;
};

class StripeLayout {
 public:
  // stripe_bytes must be a positive multiple of 4 KiB and pods at least 1.
  static Result<StripeLayout> create(size_t pods, uint64_t stripe_bytes);

  size_t pods() const { return pods_; }
  uint64_t stripe_bytes() const { return stripe_bytes_; }

  // The pieces of [offset, offset + length), in file order.
  std::vector<StripeExtent> map(uint64_t offset, uint64_t length) const;
  // The region size pod `pod` needs to hold a file of `file_size` bytes.
  uint64_t pod_region_size(size_t pod, uint64_t file_size) const;

 private:
  StripeLayout(size_t pods, uint64_t stripe_bytes) : pods_(pods), stripe_bytes_(stripe_bytes) {}
  size_t pods_;
  uint64_t stripe_bytes_;
};

}  // namespace vmpod::cpuserver
