// parse_page_request is what a memory pod runs on every byte a peer sends
// over the fabric: each rejection rule, and status codes both ways.
#include <criterion/criterion.h>

#include <climits>
#include <cstring>
#include <vector>

#include <vmpod/pods/page_protocol.h>

using namespace vmpod;
using namespace vmpod::pods;

namespace {

PageRequest request(uint8_t op, uint32_t length, uint64_t offset = 0) {
  PageRequest r{};
  r.op = op;
  r.length = length;
  r.region_id = 7;
  r.offset = offset;
  for (size_t i = 0; i < r.token.size(); ++i) r.token[i] = static_cast<uint8_t>(0xa0 + i);
  return r;
}

std::vector<std::byte> bytes_of(const PageRequest& r, size_t payload = 0) {
  std::vector<std::byte> out(sizeof(r) + payload, std::byte{0x5a});
  std::memcpy(out.data(), &r, sizeof(r));
  return out;
}

constexpr uint8_t kRead = static_cast<uint8_t>(PageOp::kRead);
constexpr uint8_t kWrite = static_cast<uint8_t>(PageOp::kWrite);
constexpr uint8_t kDiscard = static_cast<uint8_t>(PageOp::kDiscard);

void expect_invalid(const std::vector<std::byte>& bytes, const char* why) {
  auto parsed = parse_page_request(bytes);
  cr_expect(!parsed.has_value(), "%s: accepted", why);
  if (!parsed) cr_expect_eq(parsed.error().code(), ErrorCode::kInvalidArgument, "%s", why);
}

}  // namespace

Test(page_protocol, wire_layout) {
  cr_expect_eq(sizeof(PageRequest), 40u);
  cr_expect_eq(offsetof(PageRequest, length), 4u);
  cr_expect_eq(offsetof(PageRequest, region_id), 8u);
  cr_expect_eq(offsetof(PageRequest, offset), 16u);
  cr_expect_eq(offsetof(PageRequest, token), 24u);
  cr_expect_eq(sizeof(PageReply), 8u);
}

Test(page_protocol, valid_requests_parse_with_their_fields) {
  auto read = parse_page_request(bytes_of(request(kRead, 4096, 8192)));
  cr_assert(read.has_value(), "%s", read ? "" : read.error().message().c_str());
  cr_expect_eq(read->op, kRead);
  cr_expect_eq(read->length, 4096u);
  cr_expect_eq(read->region_id, 7u);
  cr_expect_eq(read->offset, 8192u);
  cr_expect_eq(read->token[15], 0xafu);

  auto write = parse_page_request(bytes_of(request(kWrite, 100, 3), 100));
  cr_assert(write.has_value(), "%s", write ? "" : write.error().message().c_str());
  cr_expect_eq(write->length, 100u);

  cr_expect(parse_page_request(bytes_of(request(kRead, kMaxPageIo))).has_value());
  cr_expect(parse_page_request(bytes_of(request(kWrite, kMaxPageIo), kMaxPageIo)).has_value());
  cr_expect(parse_page_request(bytes_of(request(kRead, 0))).has_value());
  cr_expect(parse_page_request(bytes_of(request(kWrite, 0))).has_value());
  // A discard names a range and carries no data: it may exceed kMaxPageIo.
  cr_expect(parse_page_request(bytes_of(request(kDiscard, UINT32_MAX))).has_value());
}

Test(page_protocol, truncated) {
  auto whole = bytes_of(request(kRead, 4096));
  for (size_t size = 0; size < sizeof(PageRequest); ++size) {
    auto parsed = parse_page_request(std::span(whole.data(), size));
    cr_expect(!parsed.has_value(), "%zu bytes accepted", size);
    if (!parsed) {
      cr_expect_eq(parsed.error().code(), ErrorCode::kInvalidArgument);
      cr_expect(parsed.error().message().find("truncated") != std::string::npos, "%s",
                parsed.error().message().c_str());
    }
  }
}

Test(page_protocol, bad_op) {
  for (int op : {0, 4, 5, 0x7f, 0x81, 0xff}) {
    auto parsed = parse_page_request(bytes_of(request(static_cast<uint8_t>(op), 0)));
    cr_expect(!parsed.has_value(), "op %d accepted", op);
    if (!parsed) {
      cr_expect(parsed.error().message().find("unknown page op") != std::string::npos, "%s",
                parsed.error().message().c_str());
    }
  }
}

Test(page_protocol, length_over_limit) {
  expect_invalid(bytes_of(request(kRead, kMaxPageIo + 1)), "read over the limit");
  expect_invalid(bytes_of(request(kRead, UINT32_MAX)), "read of 4 GiB");
  expect_invalid(bytes_of(request(kWrite, kMaxPageIo + 1), kMaxPageIo + 1), "write over the limit");
}

Test(page_protocol, write_payload_mismatch) {
  expect_invalid(bytes_of(request(kWrite, 4096), 4095), "short write payload");
  expect_invalid(bytes_of(request(kWrite, 4096), 4097), "long write payload");
  expect_invalid(bytes_of(request(kWrite, 4096), 0), "write without payload");
  expect_invalid(bytes_of(request(kWrite, 0), 1), "empty write with payload");
}

Test(page_protocol, stray_data) {
  expect_invalid(bytes_of(request(kRead, 4096), 1), "read with a stray byte");
  expect_invalid(bytes_of(request(kRead, 4096), 4096), "read with data");
  expect_invalid(bytes_of(request(kDiscard, 4096), 8), "discard with data");
}

Test(page_protocol, offset_overflow) {
  expect_invalid(bytes_of(request(kRead, 4096, UINT64_MAX - 4095)), "read past 2^64");
  expect_invalid(bytes_of(request(kRead, 1, UINT64_MAX)), "read of the last+1 byte");
  expect_invalid(bytes_of(request(kDiscard, UINT32_MAX, UINT64_MAX - 10)), "discard past 2^64");
  expect_invalid(bytes_of(request(kWrite, 16, UINT64_MAX - 8), 16), "write past 2^64");
  // Ending exactly at 2^64 - 1 does not wrap.
  cr_expect(parse_page_request(bytes_of(request(kRead, 4096, UINT64_MAX - 4096))).has_value());
  cr_expect(parse_page_request(bytes_of(request(kRead, 0, UINT64_MAX))).has_value());
}

Test(page_protocol, status_round_trip) {
  cr_expect_eq(encode_status(Status{}), 0);
  cr_expect(decode_status(0, "page request").has_value());
  for (int c = 0; c <= static_cast<int>(ErrorCode::kInternal); ++c) {
    auto code = static_cast<ErrorCode>(c);
    Status failed = fail(code, "why");
    int32_t wire = encode_status(failed);
    cr_expect_eq(wire, c + 1, "code %d on the wire as %d", c, wire);
    Status back = decode_status(wire, "page request");
    cr_assert(!back.has_value());
    cr_expect_eq(back.error().code(), code);
    cr_expect(back.error().message().find("page request") == 0, "%s",
              back.error().message().c_str());
    cr_expect(back.error().message().find(std::string(error_code_name(code))) != std::string::npos,
              "%s", back.error().message().c_str());
  }
}

Test(page_protocol, bad_status_is_internal) {
  for (int32_t wire : {-1, -100, static_cast<int32_t>(ErrorCode::kInternal) + 2, 1000, INT32_MAX,
                       INT32_MIN}) {
    Status back = decode_status(wire, "reply");
    cr_assert(!back.has_value(), "status %d decoded as success", wire);
    cr_expect_eq(back.error().code(), ErrorCode::kInternal, "status %d", wire);
    cr_expect(back.error().message().find("bad status") != std::string::npos, "%s",
              back.error().message().c_str());
  }
}
