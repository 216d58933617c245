#include <vmpod/pods/page_protocol.h>

#include <string>

namespace vmpod::pods {

Status decode_status(int32_t status, std::string_view what) {
  if (status == 0) return {};
  int64_t code = int64_t{status} - 1;  // INT32_MIN - 1 would overflow
  if (code < 0 || code > static_cast<int32_t>(ErrorCode::kInternal)) {
    return fail(ErrorCode::kInternal, std::string(what) + ": bad status " + std::to_string(status));
  }
  auto error_code = static_cast<ErrorCode>(code);
  return fail(error_code, std::string(what) + ": " + std::string(error_code_name(error_code)));
}

Result<PageRequest> parse_page_request(std::span<const std::byte> bytes) {
  PageRequest request;
  if (bytes.size() < sizeof(request)) {
    return fail(ErrorCode::kInvalidArgument,
                "page request of " + std::to_string(bytes.size()) + " bytes is truncated");
  }
  std::memcpy(&request, bytes.data(), sizeof(request));
  size_t payload = bytes.size() - sizeof(request);
  if (request.length > kMaxPageIo && request.op != static_cast<uint8_t>(PageOp::kDiscard)) {
    return fail(ErrorCode::kInvalidArgument,
                "page request of " + std::to_string(request.length) + " bytes exceeds the limit");
  }
  if (request.offset + request.length < request.offset) {
    return fail(ErrorCode::kInvalidArgument, "page request range overflows");
  }
  switch (static_cast<PageOp>(request.op)) {
    case PageOp::kRead:
    case PageOp::kDiscard:
      if (payload != 0) return fail(ErrorCode::kInvalidArgument, "page request carries stray data");
      break;
    case PageOp::kWrite:
      if (payload != request.length) {
        return fail(ErrorCode::kInvalidArgument, "page write carries " + std::to_string(payload) +
                                                     " bytes for a length of " +
                                                     std::to_string(request.length));
      }
      break;
    default:
      return fail(ErrorCode::kInvalidArgument, "unknown page op " + std::to_string(request.op));
  }
  return request;
}

}  // namespace vmpod::pods
