#include <vmpod/base/result.h>

#include <cerrno>
#include <cstring>

namespace vmpod {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotFound: return "not-found";
    case ErrorCode::kAlreadyExists: return "already-exists";
    case ErrorCode::kInvalidArgument: return "invalid-argument";
    case ErrorCode::kWrongState: return "wrong-state";
    case ErrorCode::kUnavailable: return "unavailable";
    case ErrorCode::kNoSpace: return "no-space";
    case ErrorCode::kPermissionDenied: return "permission-denied";
    case ErrorCode::kInternal: return "internal";
  }
  return "internal";
}

int error_code_errno(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotFound: return ENOENT;
    case ErrorCode::kAlreadyExists: return EEXIST;
    case ErrorCode::kInvalidArgument: return EINVAL;
    case ErrorCode::kWrongState: return EBUSY;
    case ErrorCode::kUnavailable: return EIO;
    case ErrorCode::kNoSpace: return ENOSPC;
    case ErrorCode::kPermissionDenied: return EACCES;
    case ErrorCode::kInternal: return EIO;
  }
  return EIO;
}

std::string Error::to_string() const {
  return std::string(error_code_name(code_)) + ": " + message_;
}

tl::unexpected<Error> fail_errno(std::string_view what, int err) {
  ErrorCode code = ErrorCode::kInternal;
  switch (err) {
    case ENOENT: code = ErrorCode::kNotFound; break;
    case EEXIST: code = ErrorCode::kAlreadyExists; break;
    case EINVAL: code = ErrorCode::kInvalidArgument; break;
    case ENOSPC: code = ErrorCode::kNoSpace; break;
    case EACCES: case EPERM: code = ErrorCode::kPermissionDenied; break;
    case ECONNREFUSED: case ECONNRESET: case EPIPE: case ETIMEDOUT: case EHOSTUNREACH:
      code = ErrorCode::kUnavailable; break;
    default: break;
  }
  return fail(code, std::string(what) + ": " + std::strerror(err));
}

}  // namespace vmpod
