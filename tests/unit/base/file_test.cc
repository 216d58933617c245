// read_file, read_file_tail, write_file and write_file_atomically on real
// files in a fresh directory: contents, tails, errors with their paths.
#include <criterion/criterion.h>

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include <vmpod/base/file.h>

using namespace vmpod;

namespace {

std::string g_dir;

void make_dir() {
  char pattern[] = "/tmp/vmpod-file-test.XXXXXX";
  cr_assert_not_null(::mkdtemp(pattern));
  g_dir = pattern;
}

void remove_dir() {
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
}

// `got` outlives the comparison: a temporary's c_str() would not.
void expect_text(const Result<std::string>& got, const char* want) {
  cr_assert(got.has_value(), "%s", got ? "" : got.error().to_string().c_str());
  cr_expect_str_eq(got->c_str(), want);
}

}  // namespace

TestSuite(file, .init = make_dir, .fini = remove_dir);

Test(file, writes_and_reads_back_binary_bytes) {
  std::string bytes("a\0b\nc", 5);
  bytes += std::string(200000, 'x');  // more than one read's buffer
  const std::string path = g_dir + "/f";
  cr_assert(write_file(path, bytes).has_value());
  auto read = read_file(path);
  cr_assert(read.has_value(), "%s", read ? "" : read.error().to_string().c_str());
  cr_expect_eq(read->size(), bytes.size());
  cr_expect(*read == bytes);
}

Test(file, write_replaces_a_longer_file) {
  const std::string path = g_dir + "/f";
  cr_assert(write_file(path, "a long first version").has_value());
  cr_assert(write_file(path, "short").has_value());
  expect_text(read_file(path), "short");
}

Test(file, tail_is_the_last_bytes_or_all_of_a_short_file) {
  const std::string path = g_dir + "/log";
  cr_assert(write_file(path, "0123456789").has_value());
  expect_text(read_file_tail(path, 4), "6789");
  expect_text(read_file_tail(path, 10), "0123456789");
  expect_text(read_file_tail(path, 100), "0123456789");
  expect_text(read_file_tail(path, 0), "");
}

Test(file, a_missing_file_is_not_found_and_named) {
  const std::string path = g_dir + "/missing";
  for (auto result : {read_file(path), read_file_tail(path, 10)}) {
    cr_assert(!result.has_value());
    cr_expect_eq(result.error().code(), ErrorCode::kNotFound);
    cr_expect(result.error().message().find(path) != std::string::npos, "%s", result.error().message().c_str());
  }
}

Test(file, a_write_into_a_missing_directory_fails_and_names_it) {
  auto written = write_file(g_dir + "/no/such/f", "x");
  cr_assert(!written.has_value());
  cr_expect_eq(written.error().code(), ErrorCode::kNotFound);
  cr_expect(written.error().message().find("/no/such/f") != std::string::npos);
}

Test(file, atomic_write_leaves_no_partial_file) {
  const std::string path = g_dir + "/state";
  cr_assert(write_file_atomically(path, "one").has_value());
  cr_assert(write_file_atomically(path, "two").has_value());
  expect_text(read_file(path), "two");
  cr_expect(!std::filesystem::exists(path + ".partial"));
  auto failed = write_file_atomically(g_dir + "/no/such/state", "x");
  cr_expect(!failed.has_value());
}

Test(file, a_directory_is_not_a_file) {
  auto read = read_file(g_dir);
  cr_assert(!read.has_value(), "reading a directory must fail, not return empty bytes");
}
