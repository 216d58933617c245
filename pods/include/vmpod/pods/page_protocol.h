// The page protocol carried in fabric messages between podfs and a memory
// pod. Fixed little-endian structs: the page path must not pay for a
// serializer, and a memory pod checks every field before it trusts it.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>

#include <vmpod/base/result.h>

namespace vmpod::pods {

inline constexpr uint64_t kPageSize = 4096;
// The most one request may read or write: podfs sees 1 MiB READs.
inline constexpr uint32_t kMaxPageIo = 1u << 20;

using RegionToken = std::array<uint8_t, 16>;

enum class PageOp : uint8_t { kRead = 1, kWrite = 2, kDiscard = 3 };

struct PageRequest {
  uint8_t op;
  uint8_t reserved[3];
  uint32_t length;  // bytes to read, write or discard
  uint64_t region_id;
  uint64_t offset;  // byte offset in the region
  RegionToken token;
  // kWrite: `length` bytes of data follow.
};
static_assert(sizeof(PageRequest) == 40);

struct PageReply {
  int32_t status;  // 0, or 1 + vmpod::ErrorCode
  uint32_t length; // kRead: bytes of data that follow
};
static_assert(sizeof(PageReply) == 8);

inline int32_t encode_status(const Status& status) {
  return status ? 0 : 1 + static_cast<int32_t>(status.error().code());
}

Status decode_status(int32_t status, std::string_view what);

// Checks a received request: its size, op, length, and that a write carries
// exactly its data. Never trusts the peer.
Result<PageRequest> parse_page_request(std::span<const std::byte> bytes);

}  // namespace vmpod::pods
