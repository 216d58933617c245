#include <vmpod/net/frame.h>
#include <vmpod/net/message.h>

#include <criterion/criterion.h>

// net_dep does not export the directory of the generated error.pb-c.h.
extern "C" const ProtobufCMessageDescriptor vmpod__net__error_reply__descriptor;

using namespace vmpod;
using namespace vmpod::net;

namespace {

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s)); }

Frame make_frame(uint16_t type, uint16_t flags, uint64_t id, std::string body) {
  return Frame{type, flags, id, std::move(body)};
}

void expect_same(const Frame& got, const Frame& want) {
  cr_expect_eq(got.type, want.type);
  cr_expect_eq(got.flags, want.flags);
  cr_expect_eq(got.request_id, want.request_id);
  cr_expect(got.body == want.body, "body differs: %zu vs %zu bytes", got.body.size(),
            want.body.size());
}

// An ErrorReply in protobuf wire format: field 1 varint (negative int32s
// take ten bytes), field 2 length-delimited.
std::string error_reply_bytes(int32_t code, const std::string& message) {
  std::string out = "\x08";
  for (auto value = static_cast<uint64_t>(static_cast<int64_t>(code)); ; value >>= 7) {
    if (value < 0x80) {
      out.push_back(static_cast<char>(value));
      break;
    }
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
  }
  out += "\x12";
  out.push_back(static_cast<char>(message.size()));
  return out + message;
}

// A header with any magic and length, for frames an honest encoder never makes.
std::string raw_header(uint32_t magic, uint32_t body_len) {
  std::string header = encode_frame(make_frame(1, 0, 1, ""));
  for (int i = 0; i < 4; ++i) {
    header[i] = static_cast<char>(magic >> (8 * i));
    header[4 + i] = static_cast<char>(body_len >> (8 * i));
  }
  return header;
}

}  // namespace

Test(frame, header_layout_is_little_endian) {
  std::string wire = encode_frame(make_frame(0x0102, 0x0304, 0x05060708090a0b0cULL, "xyz"));
  cr_assert_eq(wire.size(), kFrameHeaderSize + 3);
  cr_expect(wire.substr(0, 4) == "VMPD");
  const unsigned char want[] = {3, 0, 0, 0, 0x02, 0x01, 0x04, 0x03,
                                0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07, 0x06, 0x05};
  cr_expect_arr_eq(wire.data() + 4, want, sizeof(want));
  cr_expect(wire.substr(kFrameHeaderSize) == "xyz");
}

Test(frame, round_trip) {
  std::string body(1000, '\0');
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7);
  Frame frame = make_frame(42, kFrameReply | kFrameError, UINT64_MAX, body);
  FrameDecoder decoder;
  cr_assert(decoder.feed(bytes_of(encode_frame(frame))).has_value());
  auto got = decoder.next();
  cr_assert(got.has_value());
  expect_same(*got, frame);
  cr_expect(!decoder.next().has_value());
  cr_expect_eq(decoder.buffered(), 0);
}

Test(frame, split_byte_by_byte) {
  Frame frame = make_frame(7, 0, 99, "split across many feeds");
  std::string wire = encode_frame(frame);
  FrameDecoder decoder;
  for (size_t i = 0; i < wire.size(); ++i) {
    cr_assert(decoder.feed(bytes_of(wire.substr(i, 1))).has_value());
    if (i + 1 < wire.size()) {
      cr_assert(!decoder.next().has_value(), "frame complete after %zu bytes", i + 1);
      cr_expect_eq(decoder.buffered(), i + 1);
    }
  }
  auto got = decoder.next();
  cr_assert(got.has_value());
  expect_same(*got, frame);
  cr_expect_eq(decoder.buffered(), 0);
}

Test(frame, several_frames_in_one_feed) {
  std::vector<Frame> frames = {make_frame(1, 0, 1, "one"), make_frame(2, 0, 2, ""),
                               make_frame(3, kFrameReply, 3, std::string(300, 'x'))};
  std::string wire;
  for (const auto& frame : frames) wire += encode_frame(frame);
  std::string next_start = encode_frame(make_frame(4, 0, 4, "partial")).substr(0, 10);
  wire += next_start;

  FrameDecoder decoder;
  cr_assert(decoder.feed(bytes_of(wire)).has_value());
  for (const auto& frame : frames) {
    auto got = decoder.next();
    cr_assert(got.has_value());
    expect_same(*got, frame);
  }
  cr_expect(!decoder.next().has_value());
  cr_expect_eq(decoder.buffered(), next_start.size());
}

Test(frame, truncated_header_stays_pending) {
  std::string wire = encode_frame(make_frame(5, 0, 5, "body"));
  FrameDecoder decoder;
  cr_assert(decoder.feed(bytes_of(wire.substr(0, kFrameHeaderSize - 1))).has_value());
  cr_expect(!decoder.next().has_value());
  cr_expect_eq(decoder.buffered(), kFrameHeaderSize - 1);
  // A whole header without its body is still pending, not an error.
  cr_assert(decoder.feed(bytes_of(wire.substr(kFrameHeaderSize - 1, 2))).has_value());
  cr_expect(!decoder.next().has_value());
  cr_assert(decoder.feed(bytes_of(wire.substr(kFrameHeaderSize + 1))).has_value());
  cr_expect(decoder.next().has_value());
}

Test(frame, bad_magic_fails_and_stays_failed) {
  FrameDecoder decoder;
  auto fed = decoder.feed(bytes_of(raw_header(0x12345678, 0)));
  cr_assert(!fed.has_value());
  cr_expect_eq(fed.error().code(), ErrorCode::kInvalidArgument);
  cr_expect(fed.error().message() == "bad frame magic 0x12345678", "%s",
            fed.error().message().c_str());
  // Even a valid frame afterwards is refused: the stream has lost sync.
  auto again = decoder.feed(bytes_of(encode_frame(make_frame(1, 0, 1, "ok"))));
  cr_assert(!again.has_value());
  cr_expect(again.error().message() == fed.error().message());
  cr_expect(!decoder.next().has_value());
}

Test(frame, bad_magic_detected_before_whole_header) {
  FrameDecoder decoder;
  cr_expect(!decoder.feed(bytes_of(std::string("GET / HTTP/1.0"))).has_value());
}

Test(frame, frames_before_a_bad_one_are_kept) {
  Frame good = make_frame(1, 0, 1, "good");
  FrameDecoder decoder;
  cr_assert(!decoder.feed(bytes_of(encode_frame(good) + "garbage!")).has_value());
  auto got = decoder.next();
  cr_assert(got.has_value());
  expect_same(*got, good);
}

Test(frame, oversized_body_fails_on_header_alone) {
  FrameDecoder decoder(16);
  auto fed = decoder.feed(bytes_of(raw_header(kFrameMagic, 17)));
  cr_assert(!fed.has_value());
  cr_expect_eq(fed.error().code(), ErrorCode::kInvalidArgument);
  cr_expect(fed.error().message() == "frame body of 17 bytes exceeds limit 16", "%s",
            fed.error().message().c_str());
  cr_expect(!decoder.feed(bytes_of(std::string(17, 'x'))).has_value());
}

Test(frame, body_at_limit_is_accepted) {
  FrameDecoder decoder(16);
  cr_assert(decoder.feed(bytes_of(encode_frame(make_frame(1, 0, 1, std::string(16, 'y'))))));
  cr_expect(decoder.next().has_value());
}

Test(frame, huge_declared_length_is_refused_without_allocating) {
  FrameDecoder decoder;  // default 4 MiB limit
  cr_expect(!decoder.feed(bytes_of(raw_header(kFrameMagic, UINT32_MAX))).has_value());
  cr_expect_eq(decoder.buffered(), 0);
}

// --- bodies: messages and error frames ---

Test(message, error_round_trip) {
  Error error(ErrorCode::kNotFound, "no pod 'web-1'");
  Error got = unpack_error(pack_error(error));
  cr_expect_eq(got.code(), ErrorCode::kNotFound);
  cr_expect(got.message() == error.message());
}

Test(message, every_code_round_trips) {
  for (int code = 0; code <= static_cast<int>(ErrorCode::kInternal); ++code) {
    Error got = unpack_error(pack_error(Error(static_cast<ErrorCode>(code), "m")));
    cr_expect_eq(static_cast<int>(got.code()), code);
  }
}

Test(message, empty_message_round_trips) {
  Error got = unpack_error(pack_error(Error(ErrorCode::kWrongState, "")));
  cr_expect_eq(got.code(), ErrorCode::kWrongState);
  cr_expect(got.message().empty());
}

Test(message, hand_encoded_error_reply) {
  Error got = unpack_error(error_reply_bytes(static_cast<int32_t>(ErrorCode::kNoSpace), "full"));
  cr_expect_eq(got.code(), ErrorCode::kNoSpace);
  cr_expect(got.message() == "full");
}

Test(message, out_of_range_code_becomes_internal) {
  for (int32_t code : {-1, static_cast<int32_t>(ErrorCode::kInternal) + 1, INT32_MAX}) {
    Error got = unpack_error(error_reply_bytes(code, "from the future"));
    cr_expect_eq(got.code(), ErrorCode::kInternal, "code %d", code);
    cr_expect(got.message() == "from the future");
  }
}

Test(message, malformed_error_reply) {
  Error got = unpack_error(std::string("\xff\xff\xff", 3));
  cr_expect_eq(got.code(), ErrorCode::kInternal);
  cr_expect(got.message() == "malformed error reply");
}

Test(message, unpack_message_rejects_garbage) {
  auto got = unpack_message(vmpod__net__error_reply__descriptor, std::string("\x0a\x05" "ab", 4));
  cr_assert(!got.has_value());
  cr_expect_eq(got.error().code(), ErrorCode::kInvalidArgument);
  cr_expect(got.error().message() == "malformed ErrorReply message", "%s",
            got.error().message().c_str());
}

Test(message, typed_unpack) {
  auto got = unpack_message(vmpod__net__error_reply__descriptor, error_reply_bytes(3, "typed"));
  cr_assert(got.has_value());
  // The same bytes repacked are identical: pack_message is the inverse.
  cr_expect(pack_message(**got) == error_reply_bytes(3, "typed"));
}
