// Feeds arbitrary bytes to parse_page_request, as a memory pod receives them
// off the fabric, and applies whatever parses to a small PageStore the way
// the memory pod does: no crash, no overflow, and the store stays
// consistent (what was written reads back; a discarded range reads zero;
// no more pages held than the pool has; deleting the region frees all).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include <vmpod/memserver/page_store.h>
#include <vmpod/pods/page_protocol.h>

using namespace vmpod;
using vmpod::memserver::PageStore;
using vmpod::pods::PageOp;
using vmpod::pods::PageRequest;

namespace {

constexpr uint64_t kCapacityPages = 48;
constexpr uint64_t kRegionSize = 64 * 4096 + 1234;  // larger than the pool, not page aligned

void check(bool ok) {
  if (!ok) std::abort();
}

bool all_zero(std::span<const std::byte> bytes) {
  for (std::byte b : bytes) {
    if (b != std::byte{0}) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::as_bytes(std::span(data, size));
  auto parsed = pods::parse_page_request(bytes);
  if (!parsed) {
    check(parsed.error().code() == ErrorCode::kInvalidArgument);
    return 0;
  }
  const PageRequest& request = *parsed;
  // What parse_page_request promises.
  check(size >= sizeof(PageRequest));
  check(request.offset + request.length >= request.offset);
  check(request.op == static_cast<uint8_t>(PageOp::kRead) ||
        request.op == static_cast<uint8_t>(PageOp::kWrite) ||
        request.op == static_cast<uint8_t>(PageOp::kDiscard));
  if (request.op != static_cast<uint8_t>(PageOp::kDiscard)) check(request.length <= pods::kMaxPageIo);
  if (request.op == static_cast<uint8_t>(PageOp::kWrite)) {
    check(size - sizeof(PageRequest) == request.length);
  } else {
    check(size == sizeof(PageRequest));
  }

  PageStore store(kCapacityPages * 4096);
  auto region = store.create_region(kRegionSize, "fuzz");
  check(region.has_value());
  // Prefill a few pages so reads, discards and partial writes meet data.
  std::vector<std::byte> fill(3 * 4096, std::byte{0x5a});
  check(store.write(region->id, region->token, 4096, fill).has_value());

  // Region ids are clamped to the real one or a neighbour; the token is the
  // region's own unless the request's low id bit asks for the one it carries.
  uint64_t id = region->id + (request.region_id & 1);
  bool forged = (request.region_id & 2) != 0;
  pods::RegionToken token = forged ? request.token : region->token;
  bool should_refuse = id != region->id || (forged && request.token != region->token);
  // The offset as sent, and one folded into the region so the data paths run.
  uint64_t offset = (request.region_id & 4) ? request.offset : request.offset % (kRegionSize + 1);
  bool in_range = offset <= kRegionSize && request.length <= kRegionSize - offset;

  std::vector<std::byte> buffer;
  Status status;
  switch (static_cast<PageOp>(request.op)) {
    case PageOp::kRead:
      buffer.assign(request.length, std::byte{0xee});
      status = store.read(id, token, offset, buffer);
      break;
    case PageOp::kWrite:
      status = store.write(id, token, offset, bytes.subspan(sizeof(PageRequest), request.length));
      break;
    case PageOp::kDiscard:
      status = store.discard(id, token, offset, request.length);
      break;
  }
  if (should_refuse) {
    check(!status && status.error().code() == ErrorCode::kPermissionDenied);
  } else if (!in_range) {
    check(!status && status.error().code() == ErrorCode::kInvalidArgument);
  } else if (!status) {
    // Only a full pool may refuse an in-range write.
    check(status.error().code() == ErrorCode::kNoSpace &&
          request.op == static_cast<uint8_t>(PageOp::kWrite));
  } else {
    std::vector<std::byte> back(request.length);
    if (request.length > 0) check(store.read(region->id, region->token, offset, back).has_value());
    switch (static_cast<PageOp>(request.op)) {
      case PageOp::kRead:
        check(buffer == back);
        break;
      case PageOp::kWrite:
        check(request.length == 0 ||
              std::memcmp(back.data(), data + sizeof(PageRequest), request.length) == 0);
        break;
      case PageOp::kDiscard:
        check(all_zero(back));
        break;
    }
  }
  auto stats = store.stats();
  check(stats.pages_held <= kCapacityPages);
  auto info = store.region_info(region->id, region->token);
  check(info.has_value() && info->pages_held == stats.pages_held);

  // Shrink to a size picked by the request, then grow: the tail reads zero.
  uint64_t cut = request.offset % (kRegionSize + 1);
  check(store.resize_region(region->id, region->token, cut).has_value());
  check(store.resize_region(region->id, region->token, kRegionSize).has_value());
  std::vector<std::byte> tail(std::min<uint64_t>(kRegionSize - cut, 8192));
  check(store.read(region->id, region->token, cut, tail).has_value());
  check(all_zero(tail));

  check(store.delete_region(region->id, region->token).has_value());
  check(store.stats().pages_held == 0);
  return 0;
}
