// Control-plane framing: every control message between vmpod daemons is one
// frame (header + protobuf-c body) on a unix or TCP stream socket.
//
// Wire header, 20 bytes, little-endian:
//   u32 magic "VMPD" | u32 body_len | u16 type | u16 flags | u64 request_id
// A frame whose magic is wrong or whose body is longer than the decoder's
// limit is malformed: the connection that sent it is closed, nothing else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>

#include <vmpod/base/result.h>

namespace vmpod::net {

inline constexpr uint32_t kFrameMagic = 0x44504d56;  // "VMPD" on the wire
inline constexpr size_t kFrameHeaderSize = 20;
inline constexpr uint32_t kDefaultMaxFrameBody = 4u << 20;

// Frame flags.
inline constexpr uint16_t kFrameReply = 1;  // this frame answers request_id
inline constexpr uint16_t kFrameError = 2;  // body is a pod.Error message

struct Frame {
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t request_id = 0;
  std::string body;
};

std::string encode_frame(const Frame& frame);

// Incremental decoder for a byte stream: feed() whatever arrived, then take
// whole frames with next(). After an error the decoder stays failed.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_body = kDefaultMaxFrameBody) : max_body_(max_body) {}

  [[nodiscard]] Status feed(std::span<const std::byte> bytes);
  std::optional<Frame> next();
  // Bytes received that do not yet make a whole frame.
  size_t buffered() const { return buffer_.size(); }

 private:
  uint32_t max_body_;
  std::string buffer_;
  std::deque<Frame> ready_;
  std::optional<Error> failed_;
};

}  // namespace vmpod::net
