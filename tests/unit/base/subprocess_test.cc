// Subprocess: spawning, exit status, stop() with and without grace, the log
// file, process groups, and that nothing is left running or unreaped.
#include <criterion/criterion.h>

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <vmpod/base/subprocess.h>

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

// Children a failed assertion would leave behind (it skips destructors).
std::vector<pid_t> g_children;
std::string g_dir;

void setup() {
  char tmpl[] = "/tmp/vmpod-subprocess-XXXXXX";
  cr_assert_not_null(::mkdtemp(tmpl));
  g_dir = tmpl;
}

void teardown() {
  for (pid_t pid : g_children) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, WNOHANG);
  }
  g_children.clear();
  if (!g_dir.empty()) std::filesystem::remove_all(g_dir);
}

Subprocess spawn(const std::vector<std::string>& argv, const std::string& log = "") {
  auto process = Subprocess::spawn(argv, log);
  cr_assert(process.has_value(), "spawn %s: %s", argv[0].c_str(),
            process ? "" : process.error().to_string().c_str());
  g_children.push_back(process->pid());
  return std::move(*process);
}

// Polls running() until the child exits; false on timeout.
bool wait_exit(Subprocess& process, std::chrono::milliseconds timeout = 5s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (process.running()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// True when pid no longer exists at all: neither running nor a zombie.
bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

TestSuite(subprocess, .init = setup, .fini = teardown, .timeout = 30);

Test(subprocess, true_exits_zero) {
  Subprocess p = spawn({"true"});
  cr_assert_gt(p.pid(), 0);
  cr_assert(wait_exit(p));
  cr_assert(p.wait_status().has_value());
  cr_expect(WIFEXITED(*p.wait_status()));
  cr_expect_eq(WEXITSTATUS(*p.wait_status()), 0);
  cr_expect(!p.running(), "running() after exit");
  cr_expect(gone(p.pid()), "child not reaped");
}

Test(subprocess, false_exits_one) {
  Subprocess p = spawn({"false"});
  cr_assert(wait_exit(p));
  cr_assert(WIFEXITED(*p.wait_status()));
  cr_expect_eq(WEXITSTATUS(*p.wait_status()), 1);
}

Test(subprocess, arguments_are_passed) {
  Subprocess p = spawn({"sh", "-c", "exit $0", "7"});
  cr_assert(wait_exit(p));
  cr_expect_eq(WEXITSTATUS(*p.wait_status()), 7);
}

Test(subprocess, missing_program_exits_127) {
  Subprocess p = spawn({"/nonexistent/vmpod-no-such-program"});
  cr_assert(wait_exit(p));
  cr_assert(WIFEXITED(*p.wait_status()));
  cr_expect_eq(WEXITSTATUS(*p.wait_status()), 127);
}

Test(subprocess, empty_argv_is_invalid) {
  auto p = Subprocess::spawn({}, "");
  cr_assert(!p.has_value());
  cr_expect_eq(p.error().code(), ErrorCode::kInvalidArgument);
}

Test(subprocess, unwritable_log_is_an_error) {
  auto p = Subprocess::spawn({"true"}, g_dir + "/no/such/dir/log");
  cr_assert(!p.has_value());
  cr_expect_eq(p.error().code(), ErrorCode::kNotFound);
}

Test(subprocess, sleep_runs_until_stopped) {
  Subprocess p = spawn({"sleep", "10"});
  std::this_thread::sleep_for(50ms);
  cr_expect(p.running());
  cr_expect(!p.wait_status().has_value());
  pid_t pid = p.pid();
  auto start = std::chrono::steady_clock::now();
  p.stop(2000ms);
  auto took = std::chrono::steady_clock::now() - start;
  cr_expect(took < 1500ms, "stop took %lld ms for a child that obeys SIGTERM",
            static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  cr_expect(!p.running());
  cr_assert(p.wait_status().has_value());
  cr_expect(WIFSIGNALED(*p.wait_status()));
  cr_expect_eq(WTERMSIG(*p.wait_status()), SIGTERM);
  cr_expect(gone(pid), "stopped child not reaped");
  p.stop(100ms);  // a second stop is harmless
}

Test(subprocess, stop_without_grace_kills) {
  Subprocess p = spawn({"sleep", "10"});
  p.stop(0ms);
  cr_assert(p.wait_status().has_value());
  cr_expect(WIFSIGNALED(*p.wait_status()));
  cr_expect_eq(WTERMSIG(*p.wait_status()), SIGKILL);
  cr_expect(gone(p.pid()));
}

Test(subprocess, stop_escalates_to_sigkill) {
  // exec keeps the ignored SIGTERM, so only SIGKILL ends it.
  Subprocess p = spawn({"sh", "-c", "trap '' TERM; exec sleep 10"});
  std::this_thread::sleep_for(100ms);
  auto start = std::chrono::steady_clock::now();
  p.stop(300ms);
  auto took = std::chrono::steady_clock::now() - start;
  cr_expect(took >= 250ms && took < 3s, "stop took %lld ms",
            static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
  cr_assert(p.wait_status().has_value());
  cr_expect(WIFSIGNALED(*p.wait_status()));
  cr_expect_eq(WTERMSIG(*p.wait_status()), SIGKILL);
  cr_expect(gone(p.pid()));
}

Test(subprocess, kill_sends_a_signal) {
  Subprocess p = spawn({"sleep", "10"});
  p.kill(SIGINT);
  cr_assert(wait_exit(p));
  cr_expect(WIFSIGNALED(*p.wait_status()));
  cr_expect_eq(WTERMSIG(*p.wait_status()), SIGINT);
}

Test(subprocess, destructor_kills_and_reaps) {
  pid_t pid;
  {
    Subprocess p = spawn({"sleep", "10"});
    pid = p.pid();
    cr_assert(p.running());
  }
  cr_expect(gone(pid), "child %d outlived its Subprocess", pid);
}

Test(subprocess, move_transfers_ownership) {
  Subprocess a = spawn({"sleep", "10"});
  pid_t pid = a.pid();
  Subprocess b(std::move(a));
  cr_expect_eq(b.pid(), pid);
  cr_expect(!a.running());  // NOLINT: moved-from is empty
  cr_expect(b.running());
  Subprocess c;
  c = std::move(b);
  cr_expect(c.running());
  cr_expect_eq(c.pid(), pid);
  // Assigning over a running child stops it.
  Subprocess d = spawn({"sleep", "10"});
  pid_t replaced = c.pid();
  c = std::move(d);
  cr_expect(gone(replaced), "child replaced by assignment still exists");
  cr_expect(c.running());
}

Test(subprocess, own_process_group) {
  Subprocess p = spawn({"sleep", "10"});
  // setpgid runs in the child after fork; give it a moment.
  pid_t group = -1;
  for (int i = 0; i < 100 && group != p.pid(); ++i) {
    group = ::getpgid(p.pid());
    std::this_thread::sleep_for(5ms);
  }
  cr_expect_eq(group, p.pid());
  cr_expect_neq(group, ::getpgrp());
}

Test(subprocess, log_file_gets_stdout_and_stderr) {
  std::string log = g_dir + "/child.log";
  {
    Subprocess p = spawn({"sh", "-c", "echo to-stdout; echo to-stderr >&2"}, log);
    cr_assert(wait_exit(p));
  }
  {
    Subprocess p = spawn({"sh", "-c", "echo second-run"}, log);
    cr_assert(wait_exit(p));
  }
  std::string text = slurp(log);
  cr_expect(text.find("to-stdout\n") != std::string::npos, "log: %s", text.c_str());
  cr_expect(text.find("to-stderr\n") != std::string::npos, "log: %s", text.c_str());
  // Appended, not truncated.
  cr_expect(text.find("second-run\n") != std::string::npos, "log: %s", text.c_str());
  cr_expect(text.find("to-stdout") < text.find("second-run"));
}

Test(subprocess, stdin_is_dev_null) {
  std::string log = g_dir + "/stdin.log";
  Subprocess p = spawn({"sh", "-c", "cat; echo done"}, log);
  cr_assert(wait_exit(p), "child blocked reading stdin");
  cr_expect_eq(slurp(log), std::string("done\n"));
}

Test(subprocess, self_executable_is_this_test) {
  std::string self = self_executable();
  cr_expect(self.find("unit_base_subprocess") != std::string::npos, "%s", self.c_str());
  cr_expect(std::filesystem::exists(self));
}

// A child keeps none of the parent's descriptors beyond stdio, also those
// opened without O_CLOEXEC (a QEMU must not hold a pod's sockets).
Test(subprocess, descriptors_are_not_inherited) {
  int leaky = ::open("/dev/null", O_RDONLY);
  cr_assert_geq(leaky, 3);
  const std::string log = g_dir + "/fds.log";
  Subprocess p = spawn({"sh", "-c", "if [ -e /proc/$$/fd/$0 ]; then echo inherited; else echo closed; fi; "
                                    "[ -e /proc/$$/fd/1 ] && echo stdout",
                        std::to_string(leaky)},
                       log);
  cr_assert(wait_exit(p));
  ::close(leaky);
  cr_expect_eq(slurp(log), "closed\nstdout\n");
}
