#include <vmpod/base/file.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace vmpod {

namespace {

// Reads from the current offset to the end.
Result<std::string> read_rest(int fd, const std::string& path) {
  std::string bytes;
  char buffer[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_errno("cannot read " + path, errno);
    if (n == 0) return bytes;
    bytes.append(buffer, static_cast<size_t>(n));
  }
}

// Opens for reading and closes on every path out.
class ReadFd {
 public:
  explicit ReadFd(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~ReadFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  ReadFd(const ReadFd&) = delete;
  ReadFd& operator=(const ReadFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Result<std::string> read_file(const std::string& path) {
  ReadFd fd(path);
  if (fd.get() < 0) return fail_errno("cannot read " + path, errno);
  return read_rest(fd.get(), path);
}

Result<std::string> read_file_tail(const std::string& path, size_t limit) {
  ReadFd fd(path);
  if (fd.get() < 0) return fail_errno("cannot read " + path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail_errno("cannot stat " + path, errno);
  const auto size = static_cast<size_t>(st.st_size);
  if (size > limit && ::lseek(fd.get(), static_cast<off_t>(size - limit), SEEK_SET) < 0) {
    return fail_errno("cannot seek in " + path, errno);
  }
  auto bytes = read_rest(fd.get(), path);
  // A file still growing may have passed `limit` since the fstat.
  if (bytes && bytes->size() > limit) bytes->erase(0, bytes->size() - limit);
  return bytes;
}

Status write_file(const std::string& path, std::string_view bytes) {
  std::FILE* out = std::fopen(path.c_str(), "wbe");
  if (!out) return fail_errno("cannot write " + path, errno);
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size();
  const int write_errno = errno;
  const bool closed = std::fclose(out) == 0;
  if (!written || !closed) return fail_errno("cannot write " + path, written ? errno : write_errno);
  return {};
}

Status write_file_atomically(const std::string& path, std::string_view bytes, std::optional<mode_t> mode) {
  const std::string partial = path + ".partial";
  VMPOD_TRY_CTX(write_file(partial, bytes), "writing " + path);
  if (mode && ::chmod(partial.c_str(), *mode) != 0) {
    int chmod_errno = errno;
    std::remove(partial.c_str());
    return fail_errno("cannot chmod " + partial, chmod_errno);
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) return fail_errno("cannot rename " + partial, errno);
  return {};
}

}  // namespace vmpod
