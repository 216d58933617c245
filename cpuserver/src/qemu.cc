#include <vmpod/cpuserver/qemu.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include <vmpod/base/file.h>

namespace vmpod::cpuserver {


Result<Accel> parse_accel(std::string_view name) {
  if (name == "tcg") return Accel::kTcg;
  if (name == "kvm") return Accel::kKvm;
  if (name == "auto") return Accel::kAuto;
  return fail(ErrorCode::kInvalidArgument, "unknown accelerator '" + std::string(name) + "' (tcg, kvm, auto)");
}

std::string_view accel_name(Accel accel) {
  switch (accel) {
    case Accel::kTcg: return "tcg";
    case Accel::kKvm: return "kvm";
    case Accel::kAuto: return "auto";
  }
  return "auto";
}

Accel resolve_accel(Accel requested) {
  if (requested != Accel::kAuto) return requested;
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return Accel::kTcg;
  ::close(fd);
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) == 0) {
      return line.find(" hypervisor") != std::string::npos ? Accel::kTcg : Accel::kKvm;
    }
  }
  return Accel::kTcg;
}

QemuPaths QemuPaths::in(const std::string& run_dir) {
  return QemuPaths{run_dir + "/qmp.sock", run_dir + "/qmp-vmm.sock", run_dir + "/serial.sock",
                   run_dir + "/serial.log", run_dir + "/agent.sock", run_dir + "/qemu.log"};
}

std::string qemu_option_value(std::string_view value) {
  std::string out;
  for (char c : value) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

std::vector<std::string> qemu_command_line(const QemuConfig& config, Accel accel) {
  const GuestSpec& guest = config.guest;
  QemuPaths paths = QemuPaths::in(config.run_dir);
  std::string mib = std::to_string(guest.memory_bytes >> 20) + "M";
  std::vector<std::string> args = {
      config.qemu_binary,
      "-name", guest.name,
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      "-accel", accel == Accel::kKvm ? "kvm" : "tcg",
      "-cpu", accel == Accel::kKvm ? "host" : "max",
      "-smp", std::to_string(guest.cpus),
      "-m", mib,
  };
  std::string machine = guest.machine;
  if (!config.mem_path.empty()) {
    // share=on: guest writes reach the file (and so the memory pods), not
    // private copies; QEMU's RAM is nothing but the podfs file.
    args.insert(args.end(), {"-object", "memory-backend-file,id=ram0,size=" + mib +
                                            ",mem-path=" + config.mem_path + ",share=on"});
    machine += ",memory-backend=ram0";
  }
  args.insert(args.end(), {"-machine", machine});
  if (config.incoming) args.insert(args.end(), {"-incoming", "defer", "-S"});
  args.insert(args.end(), {
      "-chardev", "socket,id=qmp,path=" + paths.qmp_socket + ",server=on,wait=off",
      "-mon", "chardev=qmp,mode=control",
      // QEMU serves one client per monitor: the vmm's endpoint gets its own.
      "-chardev", "socket,id=qmp-vmm,path=" + paths.vmm_qmp_socket + ",server=on,wait=off",
      "-mon", "chardev=qmp-vmm,mode=control",
      "-chardev", "socket,id=serial0,path=" + paths.serial_socket + ",server=on,wait=off,logfile=" +
                      paths.serial_log,
      "-serial", "chardev:serial0",
      "-device", "virtio-serial-pci,id=vser0",
      "-chardev", "socket,id=agent,path=" + paths.agent_socket + ",server=on,wait=off",
      "-device", "virtserialport,chardev=agent,name=org.vmpod.agent",
  });
  if (!guest.kernel.empty()) args.insert(args.end(), {"-kernel", guest.kernel});
  if (!guest.initrd.empty()) args.insert(args.end(), {"-initrd", guest.initrd});
  if (!guest.append.empty()) args.insert(args.end(), {"-append", guest.append});
  if (!guest.disk.empty()) {
    args.insert(args.end(), {"-drive", "file=" + qemu_option_value(guest.disk) + ",if=virtio,cache=unsafe"});
  }
  if (!guest.code_disk.empty()) {
    args.insert(args.end(), {"-drive", "file=" + qemu_option_value(guest.code_disk) +
                                           ",if=none,id=code0,format=raw,readonly=on",
                             "-device", "virtio-blk-pci,drive=code0,serial=vmpod-code"});
  }
  if (!guest.generation_id.empty()) {
    args.insert(args.end(), {"-device", "vmgenid,id=vmgenid0,guid=" + guest.generation_id});
  }
  if (!guest.mac.empty()) {
    // restrict=on: the guest reaches neither the host nor any network.
    args.insert(args.end(), {"-netdev", "user,id=net0,restrict=on",
                             "-device", "virtio-net-pci,netdev=net0,mac=" + guest.mac});
  }
  return args;
}

// --- QemuProcess -------------------------------------------------------------

namespace {

std::string tail_of(const std::string& path, size_t bytes) {
  std::string text = read_file_tail(path, bytes).value_or("");
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

}  // namespace

Result<std::unique_ptr<QemuProcess>> QemuProcess::start(const QemuConfig& config) {
  std::unique_ptr<QemuProcess> process(new QemuProcess());
  process->accel_ = resolve_accel(config.guest.accel);
  process->paths_ = QemuPaths::in(config.run_dir);
  for (const std::string& stale : {process->paths_.qmp_socket, process->paths_.vmm_qmp_socket,
                                   process->paths_.serial_socket, process->paths_.agent_socket}) {
    ::unlink(stale.c_str());
  }
  // A fresh log per start: exit_reason() reads its tail.
  ::truncate(process->paths_.qemu_log.c_str(), 0);
  auto spawned = Subprocess::spawn(qemu_command_line(config, process->accel_), process->paths_.qemu_log);
  if (!spawned) return fail(spawned.error().context("qemu"));
  process->process_ = std::move(*spawned);
  pid_t pid = process->process_.pid();
  spdlog::info("qemu: started {} as pid {} ({})", config.guest.name, pid, accel_name(process->accel_));

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (true) {
    if (!process->running()) {
      return fail(ErrorCode::kInternal, "qemu exited at start: " + process->exit_reason());
    }
    net::SocketAddress qmp_socket{net::SocketAddress::Kind::kUnix, process->paths_.qmp_socket, "", 0};
    auto monitor = qmp::QmpClient::connect(qmp_socket, std::chrono::milliseconds(2000));
    if (monitor) {
      process->monitor_ = std::move(*monitor);
      return process;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(monitor.error().context("qemu monitor did not come up"));
    }
    // A clone waits for this: poll often, connecting costs nothing.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

QemuProcess::~QemuProcess() { process_.stop(std::chrono::milliseconds(0)); }

std::string QemuProcess::exit_reason() const {
  std::string how = "still running";
  if (auto status_value = process_.wait_status()) {
    int status = *status_value;
    if (WIFEXITED(status)) how = "exit code " + std::to_string(WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) how = "killed by signal " + std::to_string(WTERMSIG(status));
  }
  std::string log = tail_of(paths_.qemu_log, 400);
  return log.empty() ? how : how + ": " + log;
}

bool QemuProcess::wait_for_exit(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

Status QemuProcess::shutdown(std::chrono::milliseconds grace) {
  if (!running()) return {};
  if (monitor_) {
    auto quit = monitor_->execute("quit", nlohmann::json::object(), grace);
    if (!quit) spdlog::debug("qemu: quit: {}", quit.error().to_string());
  }
  if (wait_for_exit(grace)) return {};
  process_.stop(grace);
  return {};
}

Status QemuProcess::ignore_shared_ram(bool ram_shared) {
  auto set = monitor_->execute("migrate-set-capabilities",
                               {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", ram_shared}}}}});
  if (!set) return fail(set.error().context("x-ignore-shared"));
  return {};
}

Result<QemuProcess::MigrationTimes> QemuProcess::wait_for_migration(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto state = monitor_->execute("query-migrate");
    if (!state) return fail(state.error().context("query-migrate"));
    const std::string status = state->value("status", "");
    if (status == "completed") {
      return MigrationTimes{state->value("total-time", 0.0), state->value("downtime", 0.0)};
    }
    if (status == "failed" || status == "cancelled") {
      return fail(ErrorCode::kInternal, "migration " + status + ": " + state->value("error-desc", "no reason given"));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(ErrorCode::kUnavailable, "migration still '" + status + "' after the timeout");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Status QemuProcess::migrate_out(const std::string& uri, bool ram_shared) {
  VMPOD_TRY_CTX(ignore_shared_ram(ram_shared), "migrate");
  // QEMU's default cap of 128 MiB/s would measure the cap, not QEMU.
  auto raised = monitor_->execute("migrate-set-parameters", {{"max-bandwidth", int64_t{1} << 40}});
  if (!raised) return fail(raised.error().context("migrate-set-parameters"));
  auto started = monitor_->execute("migrate", {{"uri", uri}});
  if (!started) return fail(started.error().context("migrate"));
  return {};
}

Status QemuProcess::migrate_in(const std::string& uri, bool ram_shared) {
  VMPOD_TRY_CTX(ignore_shared_ram(ram_shared), "migrate-incoming");
  auto started = monitor_->execute("migrate-incoming", {{"uri", uri}});
  if (!started) return fail(started.error().context("migrate-incoming"));
  return {};
}

Status QemuProcess::save_device_state(const std::string& path, std::chrono::milliseconds timeout) {
  VMPOD_TRY_CTX(pause(), "save device state");
  VMPOD_TRY_CTX(migrate_out("exec:cat > '" + path + "'", /*ram_shared=*/true), "save device state");
  auto done = wait_for_migration(timeout);
  if (!done) return fail(done.error().context("save device state"));
  return {};
}

Status QemuProcess::load_device_state(const std::string& path, std::chrono::milliseconds timeout) {
  VMPOD_TRY_CTX(migrate_in("exec:cat '" + path + "'", /*ram_shared=*/true), "load device state");
  auto done = wait_for_migration(timeout);
  if (!done) return fail(done.error().context("load device state"));
  return {};
}

Status QemuProcess::pause() {
  auto stopped = monitor_->execute("stop");
  if (!stopped) return fail(stopped.error().context("stop"));
  return {};
}

Result<bool> QemuProcess::vcpus_running() {
  auto status = monitor_->execute("query-status");
  if (!status) return fail(status.error().context("query-status"));
  return status->value("running", false);
}

Status QemuProcess::resume() {
  auto resumed = monitor_->execute("cont");
  if (!resumed) return fail(resumed.error().context("cont"));
  return {};
}

}  // namespace vmpod::cpuserver
