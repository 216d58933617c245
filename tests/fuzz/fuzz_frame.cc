// Feeds arbitrary bytes to the control-plane parsers a peer can reach: the
// frame decoder (in several chunkings, which must all agree), error-frame
// bodies, and socket address text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/net/frame.h>
#include <vmpod/net/message.h>
#include <vmpod/net/socket.h>

using namespace vmpod::net;

namespace {

constexpr uint32_t kMaxBody = 1024;

struct Decoded {
  std::vector<Frame> frames;
  bool failed = false;
  size_t buffered = 0;
};

// chunk == 0: sizes taken from the input itself, so the fuzzer explores splits.
Decoded decode(std::span<const std::byte> bytes, size_t chunk) {
  FrameDecoder decoder(kMaxBody);
  Decoded out;
  size_t offset = 0;
  while (offset < bytes.size() && !out.failed) {
    size_t size = chunk != 0 ? chunk : 1 + static_cast<size_t>(bytes[offset]) % 31;
    size = std::min(size, bytes.size() - offset);
    out.failed = !decoder.feed(bytes.subspan(offset, size));
    offset += size;
    while (auto frame = decoder.next()) out.frames.push_back(std::move(*frame));
  }
  if (!out.failed) out.buffered = decoder.buffered();
  return out;
}

bool same(const Decoded& a, const Decoded& b) {
  if (a.failed != b.failed || a.buffered != b.buffered || a.frames.size() != b.frames.size()) {
    return false;
  }
  for (size_t i = 0; i < a.frames.size(); ++i) {
    const Frame& x = a.frames[i];
    const Frame& y = b.frames[i];
    if (x.type != y.type || x.flags != y.flags || x.request_id != y.request_id || x.body != y.body) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::as_bytes(std::span(data, size));
  Decoded whole = decode(bytes, size == 0 ? 1 : size);
  // How the stream is split must not change what it decodes to.
  if (!same(whole, decode(bytes, 1)) || !same(whole, decode(bytes, 7)) ||
      !same(whole, decode(bytes, 0))) {
    std::abort();
  }
  for (const Frame& frame : whole.frames) {
    if (frame.body.size() > kMaxBody) std::abort();
    // Re-encoding a decoded frame gives back the bytes it came from.
    std::string wire = encode_frame(frame);
    FrameDecoder again(kMaxBody);
    if (!again.feed(std::as_bytes(std::span(wire)))) std::abort();
    auto round = again.next();
    if (!round || round->body != frame.body || round->request_id != frame.request_id) std::abort();
    (void)unpack_error(frame.body);
  }
  (void)unpack_error(std::string_view(reinterpret_cast<const char*>(data), size));

  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto address = parse_socket_address(text)) {
    // Whatever parses must print back to text that parses to the same thing.
    auto reparsed = parse_socket_address(address->to_string());
    if (!reparsed || reparsed->kind != address->kind || reparsed->path != address->path ||
        reparsed->host != address->host || reparsed->port != address->port) {
      std::abort();
    }
  }
  return 0;
}
