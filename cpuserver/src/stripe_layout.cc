#include <vmpod/cpuserver/stripe_layout.h>

#include <algorithm>
#include <string>

namespace vmpod::cpuserver {

Result<StripeLayout> StripeLayout::create(size_t pods, uint64_t stripe_bytes) {
  if (pods == 0) return fail(ErrorCode::kInvalidArgument, "a file needs at least one memory pod");
  if (stripe_bytes == 0 || stripe_bytes % 4096 != 0) {
    return fail(ErrorCode::kInvalidArgument,
                "stripe of " + std::to_string(stripe_bytes) + " bytes is not a multiple of 4 KiB");
  }
  return StripeLayout(pods, stripe_bytes);
}

std::vector<StripeExtent> StripeLayout::map(uint64_t offset, uint64_t length) const {
  std::vector<StripeExtent> extents;
  uint64_t end = offset + length;
  for (uint64_t position = offset; position < end;) {
    uint64_t stripe = position / stripe_bytes_;
    uint64_t in_stripe = position % stripe_bytes_;
    uint64_t chunk = std::min(stripe_bytes_ - in_stripe, end - position);
    extents.push_back(StripeExtent{stripe % pods_, (stripe / pods_) * stripe_bytes_ + in_stripe,
                                   position, chunk});
    position += chunk;
  }
  return extents;
}

uint64_t StripeLayout::pod_region_size(size_t pod, uint64_t file_size) const {
  uint64_t full_stripes = file_size / stripe_bytes_;
  uint64_t tail = file_size % stripe_bytes_;
  // Stripes 0..full_stripes-1 are whole; stripe full_stripes holds the tail.
  uint64_t mine = full_stripes / pods_ + (pod < full_stripes % pods_ ? 1 : 0);
  uint64_t size = mine * stripe_bytes_;
  if (tail != 0 && full_stripes % pods_ == pod) size += tail;
  return size;
}

}  // namespace vmpod::cpuserver
