#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <vmpod/base/subprocess.h>
#include <vmpod/base/units.h>

#include "cli.h"

namespace vmpod::cli {

void setup_logging(const std::string& name, bool verbose) {
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %n %^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(verbose ? spdlog::level::debug : spdlog::level::info);
}

ExitCode report(const Error& error) {
  std::fprintf(stderr, "vmpod: %s\n", error.message().c_str());
  return error.code() == ErrorCode::kInvalidArgument ? ExitCode::kUsage : ExitCode::kFailure;
}

Result<net::SocketAddress> vmm_address(const std::string& flag) {
  if (!flag.empty()) return net::parse_socket_address(flag);
  if (const char* env = std::getenv("VMPOD_VMM")) return net::parse_socket_address(env);
  return net::parse_socket_address("unix:/run/vmpod/vmm.sock");
}

Result<std::unique_ptr<vmm::VmmClient>> connect_vmm(const std::string& flag) {
  auto address = vmm_address(flag);
  if (!address) return fail(address.error());
  return vmm::VmmClient::connect(*address, std::chrono::seconds(5));
}

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int wait_for_stop_signal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int signal = 0;
  sigwait(&set, &signal);
  return signal;
}

SignalFd::SignalFd() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  fd_ = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

SignalFd::~SignalFd() { ::close(fd_); }

bool SignalFd::fired() {
  signalfd_siginfo info;
  return ::read(fd_, &info, sizeof(info)) == sizeof(info);
}

Result<vmm::LocalClusterConfig> local_cluster_config(const std::string& dir, unsigned memory_pods,
                                                     const std::string& pod_capacity, bool verbose) {
  vmm::LocalClusterConfig config;
  config.vmpod_binary = self_executable();
  config.dir = dir;
  config.memory_pods = memory_pods;
  config.verbose = verbose;
  auto capacity = parse_size(pod_capacity);
  if (!capacity) return fail(capacity.error().context("--pod-capacity"));
  config.memory_pod_capacity = *capacity;
  return config;
}

void finish_local_cluster_dir(const std::string& dir, bool keep) {
  if (keep) {
    std::fprintf(stderr, "vmpod: logs kept in %s\n", dir.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec) spdlog::warn("cannot remove {}: {}", dir, ec.message());
}

std::string default_image_dir() {
  if (const char* env = std::getenv("VMPOD_IMAGE_DIR")) return env;
  return VMPOD_IMAGE_DIR;
}

}  // namespace vmpod::cli
