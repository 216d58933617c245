#include <vmpod/base/subprocess.h>

#include <fcntl.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>
#include <utility>

namespace vmpod {

Result<Subprocess> Subprocess::spawn(const std::vector<std::string>& argv, const std::string& log_path,
                                     bool die_with_parent) {
  if (argv.empty()) return fail(ErrorCode::kInvalidArgument, "empty command");
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  int log = -1;
  if (!log_path.empty()) {
    log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) return fail_errno(log_path, errno);
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    if (log >= 0) ::close(log);
    return fail_errno("fork", errno);
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    // The parent may have died before the prctl: then nobody is left to kill us.
    if (die_with_parent && (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent)) ::_exit(126);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, STDIN_FILENO);
    if (log >= 0) {
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
    }
    // Nor vmpod's descriptors: a QEMU holding a pod's listening socket or
    // a fabric connection would keep them alive after the pod let go.
    ::close_range(STDERR_FILENO + 1, ~0U, 0);
    // A child must not inherit vmpod's blocked signals.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  if (log >= 0) ::close(log);
  Subprocess process;
  process.pid_ = pid;
  return process;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), status_(other.status_) {}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    stop(std::chrono::milliseconds(0));
    pid_ = std::exchange(other.pid_, -1);
    status_ = other.status_;
  }
  return *this;
}

Subprocess::~Subprocess() { stop(std::chrono::milliseconds(0)); }

bool Subprocess::running() {
  if (pid_ <= 0 || status_) return false;
  int status = 0;
  pid_t got = ::waitpid(pid_, &status, WNOHANG);
  if (got == pid_) {
    status_ = status;
    return false;
  }
  return got == 0;
}

void Subprocess::kill(int signal) {
  if (running()) ::kill(pid_, signal);
}

void Subprocess::stop(std::chrono::milliseconds grace) {
  if (!running()) return;
  ::kill(pid_, grace.count() > 0 ? SIGTERM : SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (running()) ::kill(pid_, SIGKILL);
  int status = 0;
  if (!status_ && ::waitpid(pid_, &status, 0) == pid_) status_ = status;
}

std::string self_executable() {
  char path[4096];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "vmpod";
  return std::string(path, static_cast<size_t>(n));
}

}  // namespace vmpod
