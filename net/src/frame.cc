#include <vmpod/net/frame.h>

#include <fmt/format.h>

namespace vmpod::net {
namespace {

// Byte-wise little-endian access, so the wire format does not depend on the
// host's byte order or on the alignment of the buffer.
void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t get_le(const char* in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{static_cast<uint8_t>(in[i])} << (8 * i);
  return value;
}

}  // namespace

std::string encode_frame(const Frame& frame) {
  std::string out;
  out.reserve(kFrameHeaderSize + frame.body.size());
  put_le(out, kFrameMagic, 4);
  put_le(out, frame.body.size(), 4);
  put_le(out, frame.type, 2);
  put_le(out, frame.flags, 2);
  put_le(out, frame.request_id, 8);
  out += frame.body;
  return out;
}

Status FrameDecoder::feed(std::span<const std::byte> bytes) {
  if (failed_) return fail(*failed_);
  buffer_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());

  // Frames are cut from `offset` and the consumed prefix is erased once, so
  // a feed holding many small frames stays linear.
  size_t offset = 0;
  std::optional<Error> error;
  while (buffer_.size() - offset >= 4) {
    const char* header = buffer_.data() + offset;
    // The magic is checked as soon as it arrives so a stream that is not ours
    // fails on its first bytes.
    if (auto magic = static_cast<uint32_t>(get_le(header, 4)); magic != kFrameMagic) {
      error = Error(ErrorCode::kInvalidArgument, fmt::format("bad frame magic {:#010x}", magic));
      break;
    }
    if (buffer_.size() - offset < kFrameHeaderSize) break;
    auto body_len = static_cast<uint32_t>(get_le(header + 4, 4));
    if (body_len > max_body_) {
      error = Error(ErrorCode::kInvalidArgument,
                    fmt::format("frame body of {} bytes exceeds limit {}", body_len, max_body_));
      break;
    }
    if (buffer_.size() - offset - kFrameHeaderSize < body_len) break;
    Frame frame;
    frame.type = static_cast<uint16_t>(get_le(header + 8, 2));
    frame.flags = static_cast<uint16_t>(get_le(header + 10, 2));
    frame.request_id = get_le(header + 12, 8);
    frame.body.assign(header + kFrameHeaderSize, body_len);
    ready_.push_back(std::move(frame));
    offset += kFrameHeaderSize + body_len;
  }

  if (error) {
    // Frames decoded before the bad one stay available through next().
    failed_ = std::move(error);
    buffer_.clear();
    buffer_.shrink_to_fit();
    return fail(*failed_);
  }
  buffer_.erase(0, offset);
  return {};
}

std::optional<Frame> FrameDecoder::next() {
  if (ready_.empty()) return std::nullopt;
  Frame frame = std::move(ready_.front());
  ready_.pop_front();
  return frame;
}

}  // namespace vmpod::net
