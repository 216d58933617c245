// Error codes, their names and errnos, context chaining, and the errno
// mapping of fail_errno: the one place errors cross to and from the C library.
#include <criterion/criterion.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <string>

#include <vmpod/base/result.h>

using namespace vmpod;

namespace {

struct CodeRow {
  ErrorCode code;
  const char* name;
  int err;
};

// Written out from the lifecycle of a caller: podfs answers with these errnos.
constexpr CodeRow kCodes[] = {
    {ErrorCode::kNotFound, "not-found", ENOENT},
    {ErrorCode::kAlreadyExists, "already-exists", EEXIST},
    {ErrorCode::kInvalidArgument, "invalid-argument", EINVAL},
    {ErrorCode::kWrongState, "wrong-state", EBUSY},
    {ErrorCode::kUnavailable, "unavailable", EIO},
    {ErrorCode::kNoSpace, "no-space", ENOSPC},
    {ErrorCode::kPermissionDenied, "permission-denied", EACCES},
    {ErrorCode::kInternal, "internal", EIO},
};

Status inner(bool ok) {
  if (ok) return {};
  return fail(ErrorCode::kNotFound, "no such region");
}

Result<int> outer(bool ok) {
  VMPOD_TRY_CTX(inner(ok), "read");
  return 42;
}

}  // namespace

Test(result, code_names) {
  std::set<std::string> names;
  for (const CodeRow& row : kCodes) {
    cr_expect_eq(std::string(error_code_name(row.code)), std::string(row.name),
                 "code %d is named %s, want %s", static_cast<int>(row.code),
                 std::string(error_code_name(row.code)).c_str(), row.name);
    names.insert(std::string(error_code_name(row.code)));
  }
  cr_expect_eq(names.size(), std::size(kCodes), "names are not distinct");
}

Test(result, code_errnos) {
  for (const CodeRow& row : kCodes) {
    cr_expect_eq(error_code_errno(row.code), row.err, "%s maps to errno %d, want %d", row.name,
                 error_code_errno(row.code), row.err);
  }
}

Test(result, error_holds_code_and_message) {
  Error error(ErrorCode::kNoSpace, "pod full");
  cr_expect_eq(error.code(), ErrorCode::kNoSpace);
  cr_expect_eq(error.message(), std::string("pod full"));
  cr_expect_eq(error.to_string(), std::string("no-space: pod full"));
}

Test(result, context_chains_outermost_first) {
  Error error(ErrorCode::kUnavailable, "connection closed");
  Error chained = error.context("memory pod mem0").context("podfs");
  cr_expect_eq(chained.code(), ErrorCode::kUnavailable);
  cr_expect_eq(chained.message(), std::string("podfs: memory pod mem0: connection closed"));
  cr_expect_eq(chained.to_string(), std::string("unavailable: podfs: memory pod mem0: connection closed"));
  // context() returns a new error; the original is unchanged.
  cr_expect_eq(error.message(), std::string("connection closed"));
}

Test(result, fail_builds_an_unexpected) {
  Result<int> r = fail(ErrorCode::kWrongState, "vm is running");
  cr_assert(!r.has_value());
  cr_expect_eq(r.error().code(), ErrorCode::kWrongState);
  cr_expect_eq(r.error().message(), std::string("vm is running"));
  Result<int> copy = fail(r.error());
  cr_expect_eq(copy.error().code(), ErrorCode::kWrongState);
}

Test(result, try_ctx_propagates_with_context) {
  auto good = outer(true);
  cr_assert(good.has_value());
  cr_expect_eq(*good, 42);
  auto bad = outer(false);
  cr_assert(!bad.has_value());
  cr_expect_eq(bad.error().code(), ErrorCode::kNotFound);
  cr_expect_eq(bad.error().message(), std::string("read: no such region"));
}

Test(result, fail_errno_maps_errnos) {
  struct Row {
    int err;
    ErrorCode code;
  };
  const Row rows[] = {
      {ENOENT, ErrorCode::kNotFound},         {EEXIST, ErrorCode::kAlreadyExists},
      {EINVAL, ErrorCode::kInvalidArgument},  {ENOSPC, ErrorCode::kNoSpace},
      {EACCES, ErrorCode::kPermissionDenied}, {EPERM, ErrorCode::kPermissionDenied},
      {ECONNREFUSED, ErrorCode::kUnavailable}, {ECONNRESET, ErrorCode::kUnavailable},
      {EPIPE, ErrorCode::kUnavailable},       {ETIMEDOUT, ErrorCode::kUnavailable},
      {EHOSTUNREACH, ErrorCode::kUnavailable}, {EIO, ErrorCode::kInternal},
      {EBADF, ErrorCode::kInternal},          {0, ErrorCode::kInternal},
      {99999, ErrorCode::kInternal},
  };
  for (const Row& row : rows) {
    auto error = fail_errno("open /x", row.err).value();
    cr_expect_eq(error.code(), row.code, "errno %d gave %s", row.err,
                 std::string(error_code_name(error.code())).c_str());
  }
}

Test(result, fail_errno_message_names_what_and_strerror) {
  auto error = fail_errno("open /nonexistent", ENOENT).value();
  cr_expect_eq(error.message(), std::string("open /nonexistent: ") + std::strerror(ENOENT));
}

// The codes podfs turns into errnos come back as themselves.
Test(result, errno_round_trip_for_filesystem_codes) {
  for (ErrorCode code : {ErrorCode::kNotFound, ErrorCode::kAlreadyExists,
                         ErrorCode::kInvalidArgument, ErrorCode::kNoSpace,
                         ErrorCode::kPermissionDenied}) {
    auto back = fail_errno("x", error_code_errno(code)).value().code();
    cr_expect_eq(back, code, "%s did not round trip",
                 std::string(error_code_name(code)).c_str());
  }
}
