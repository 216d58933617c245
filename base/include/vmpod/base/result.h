// The one checked error type every vmpod component returns (RocksDB's Status,
// QEMU's Error): a small value with a code a caller can branch on and a
// lower-case message that gains context as it propagates.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace vmpod {

// Only the codes a caller branches on. kNoSpace and kPermissionDenied exist
// because podfs maps them to ENOSPC and EACCES, which QEMU and libvirt act on.
enum class ErrorCode {
  kNotFound,
  kAlreadyExists,
  kInvalidArgument,
  kWrongState,
  kUnavailable,  // a lost or unreachable pod: retryable
  kNoSpace,
  kPermissionDenied,
  kInternal,
};

std::string_view error_code_name(ErrorCode code);
// The errno a filesystem answer should carry for this code.
int error_code_errno(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "what: message", so an error read at the top says where it came from.
  [[nodiscard]] Error context(std::string_view what) const {
    return Error(code_, std::string(what) + ": " + message_);
  }

  std::string to_string() const;

 private:
  ErrorCode code_;
  std::string message_;
};

template <class T>
using Result = tl::expected<T, Error>;
using Status = Result<void>;

inline tl::unexpected<Error> fail(ErrorCode code, std::string message) {
  return tl::unexpected<Error>(Error(code, std::move(message)));
}

inline tl::unexpected<Error> fail(Error error) { return tl::unexpected<Error>(std::move(error)); }

// Errors from the C library: "what: strerror(errno)".
tl::unexpected<Error> fail_errno(std::string_view what, int err);

}  // namespace vmpod

// Propagates an error from a Result-returning expression, adding context.
#define VMPOD_TRY_CTX(expr, what)                                          \
  do {                                                                     \
    auto vmpod_try_result_ = (expr);                                       \
    if (!vmpod_try_result_) return ::vmpod::fail(vmpod_try_result_.error().context(what)); \
  } while (0)
