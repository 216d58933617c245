// Cleanup that survives a crashed test. Criterion runs fini after a failed
// assertion, but not after a crash (a sanitizer report, a signal, a timeout
// kill), and a test that serves FUSE in its own process cannot even finish
// crashing: closing its files waits on FUSE answers that its own dead
// workers owe, and the /dev/fuse descriptor that would end the wait is
// among the files still to be closed.
//
// So a watchdog process, forked before the test starts anything, removes the
// test's directory when the test process dies without saying it cleaned up,
// and, when the process sits in its exit for a while with a FUSE mount of
// the test still there, aborts that mount's connection so it can finish.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace crash_cleanup {

namespace detail {

inline bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  out = text.str();
  return true;
}

// PF_EXITING in the flags field of /proc/PID/stat.
inline bool exiting(pid_t pid) {
  std::string stat;
  if (!read_file("/proc/" + std::to_string(pid) + "/stat", stat)) return false;
  auto close = stat.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  unsigned long flags = 0;
  for (int i = 3; i <= 9 && fields >> field; ++i) {
    if (i == 9) flags = std::stoul(field);
  }
  constexpr unsigned long kPfExiting = 0x4;
  return (flags & kPfExiting) != 0;
}

// The device of whatever is mounted at `path` ("0:42"), or "".
inline std::string mounted_device(const std::string& path) {
  std::string mountinfo;
  if (path.empty() || !read_file("/proc/self/mountinfo", mountinfo)) return "";
  std::istringstream lines(mountinfo);
  std::string line, device;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point == path) device = dev;  // the last one is on top
  }
  return device;
}

inline void abort_fuse(const std::string& mountpoint, unsigned minor) {
  // Only the test's own mount: a minor number is recycled once it is gone.
  if (mounted_device(mountpoint) != "0:" + std::to_string(minor)) return;
  std::string connection = "/sys/fs/fuse/connections/" + std::to_string(minor);
  if (::access(connection.c_str(), F_OK) != 0) {
    ::mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);
  }
  std::ofstream abort(connection + "/abort");
  abort << "1\n";
}

[[noreturn]] inline void watch(pid_t parent, int fd, const std::string& dir,
                               const std::string& mountpoint) {
  unsigned minor = 0;
  bool have_minor = false;
  int exiting_polls = 0;
  while (true) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 100) > 0) {
      char message[5];
      ssize_t n = ::read(fd, message, 1);
      if (n == 1 && message[0] == 'D') ::_exit(0);
      if (n == 1 && message[0] == 'M' && ::read(fd, message + 1, 4) == 4) {
        std::memcpy(&minor, message + 1, 4);
        have_minor = true;
        continue;
      }
      if (n <= 0) break;  // the test process is gone and did not clean up
      continue;
    }
    exiting_polls = exiting(parent) ? exiting_polls + 1 : 0;
    if (have_minor && exiting_polls >= 3) abort_fuse(mountpoint, minor);
  }
  if (have_minor) abort_fuse(mountpoint, minor);
  if (!mountpoint.empty() && !mounted_device(mountpoint).empty()) {
    ::umount2(mountpoint.c_str(), MNT_DETACH);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  ::_exit(0);
}

}  // namespace detail

class Watchdog {
 public:
  // Call before the test starts threads or opens anything it must let go.
  // Returns false when the watchdog could not be started.
  bool start(const std::string& dir, const std::string& mountpoint = "") {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(fds[0]);
      ::close(fds[1]);
      return false;
    }
    if (pid == 0) {
      ::close(fds[1]);
      // Hold nothing of the test's: not its output, not criterion's sockets,
      // not /dev/fuse.
      int null = ::open("/dev/null", O_RDWR);
      for (int target : {0, 1, 2}) ::dup2(null, target);
      ::dup2(fds[0], 3);
      ::close_range(4, ~0u, 0);
      detail::watch(parent, 3, dir, mountpoint);
    }
    ::close(fds[0]);
    pid_ = pid;
    fd_ = fds[1];
    return true;
  }

  // Names the FUSE connection of the mountpoint, once mounted.
  void mounted(const std::string& mountpoint) {
    struct stat st {};
    if (pid_ <= 0 || ::stat(mountpoint.c_str(), &st) != 0) return;
    char message[5] = {'M'};
    unsigned minor = ::minor(st.st_dev);
    std::memcpy(message + 1, &minor, 4);
    (void)!::write(fd_, message, sizeof(message));
  }

  // The test cleaned up itself: the watchdog leaves without touching anything.
  void stop() {
    if (pid_ <= 0) return;
    (void)!::write(fd_, "D", 1);
    ::close(fd_);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

}  // namespace crash_cleanup
