// The QEMU launcher and supervisor of a compute pod: the command line for a
// guest whose RAM is a file (on podfs, or plain RAM for baselines), the
// process, its internal QMP monitor, and a clean shutdown.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/base/subprocess.h>
#include <vmpod/net/socket.h>
#include <vmpod/qmp/qmp_client.h>

namespace vmpod::cpuserver {

enum class Accel { kTcg, kKvm, kAuto };

Result<Accel> parse_accel(std::string_view name);  // "tcg", "kvm", "auto"
std::string_view accel_name(Accel accel);
// kAuto picks KVM only where it can run a full guest: /dev/kvm opens and
// this host is not itself a guest (nested KVM here cannot boot Linux, see
// shared/FACTS.md; ask for kvm explicitly where nesting works).
Accel resolve_accel(Accel requested);

// The kernel command line vmpod boots its guest image with (see
// images/README.md): a panic ends QEMU (panic=-1 with -no-reboot), and
// boot skips the crypto self-tests and speculation workarounds.
inline constexpr const char* kGuestImageAppend = "console=ttyS0 panic=-1 quiet mitigations=off cryptomgr.notests";

struct GuestSpec {
  std::string name = "vm0";
  uint64_t memory_bytes = 256ull << 20;
  unsigned cpus = 1;
  std::string machine = "q35";
  Accel accel = Accel::kAuto;
  std::string kernel;
  std::string initrd;
  std::string append;
  std::string disk;  // a raw or qcow2 image, as virtio-blk
  // A read-only raw image as a second virtio-blk disk with the serial
  // "vmpod-code": the code under test, which each clone of a snapshot may
  // replace (the guest reads it only after the fork).
  std::string code_disk;
  std::string generation_id;  // a UUID: a vmgenid device with it; empty: none
  std::string mac;  // a virtio-net NIC on an isolated user network; empty: none
};

struct QemuConfig {
  GuestSpec guest;
  std::string qemu_binary = "qemu-system-x86_64";
  std::string mem_path;  // the RAM file; empty for QEMU's own anonymous RAM
  std::string run_dir;   // sockets and logs of this guest
  // Start with the vCPUs stopped, waiting for a device state
  // (-incoming defer -S): a guest moving in from another QEMU.
  bool incoming = false;
};

// Where a guest's sockets and logs live, derived from its run_dir.
struct QemuPaths {
  std::string qmp_socket;     // the compute pod's own QMP monitor
  std::string vmm_qmp_socket; // a second monitor, for the vmm's per-VM endpoint
  std::string serial_socket;  // the console, for a terminal to attach
  std::string serial_log;     // everything the console printed
  std::string agent_socket;   // virtio-serial port org.vmpod.agent
  std::string qemu_log;       // QEMU's stderr

  static QemuPaths in(const std::string& run_dir);
};

// A value inside a QEMU option list ("file=VALUE,..."): commas doubled.
std::string qemu_option_value(std::string_view value);
std::vector<std::string> qemu_command_line(const QemuConfig& config, Accel accel);

class QemuProcess {
 public:
  static Result<std::unique_ptr<QemuProcess>> start(const QemuConfig& config);
  ~QemuProcess();  // kills a QEMU still running

  pid_t pid() const { return process_.pid(); }
  const QemuPaths& paths() const { return paths_; }
  Accel accel() const { return accel_; }
  qmp::QmpClient& monitor() { return *monitor_; }

  // Reaps the process if it ended; its wait status then stays available.
  bool running() { return process_.running(); }
  std::optional<int> exit_status() const { return process_.wait_status(); }
  // Why QEMU ended, from its exit status and the tail of its log.
  std::string exit_reason() const;

  // QMP quit, then SIGTERM, then SIGKILL, each after `grace`.
  Status shutdown(std::chrono::milliseconds grace);

  // Stops the vCPUs and writes the device state to `path`, without the
  // RAM: it is shared with the memory pods (x-ignore-shared), so the state
  // is about the same size whatever the guest's RAM.
  Status save_device_state(const std::string& path, std::chrono::milliseconds timeout);
  // For a QEMU started `incoming`: reads the device state from `path`. The
  // vCPUs stay stopped until resume().
  Status load_device_state(const std::string& path, std::chrono::milliseconds timeout);
  Status pause();
  Status resume();
  // Whether the vCPUs run (QMP query-status).
  Result<bool> vcpus_running();

  // QEMU's own migration, for comparisons: migrate_out sends the guest to
  // `uri` (RAM included unless ram_shared), with the bandwidth cap lifted;
  // migrate_in starts taking one from `uri` on a QEMU started `incoming`.
  // wait_for_migration reports QEMU's total time and downtime.
  struct MigrationTimes {
    double total_ms = 0;
    double downtime_ms = 0;
  };
  Status migrate_out(const std::string& uri, bool ram_shared);
  Status migrate_in(const std::string& uri, bool ram_shared);
  Result<MigrationTimes> wait_for_migration(std::chrono::milliseconds timeout);

 private:
  QemuProcess() = default;
  bool wait_for_exit(std::chrono::milliseconds timeout);
  Status ignore_shared_ram(bool ram_shared);

  Subprocess process_;
  Accel accel_ = Accel::kTcg;
  QemuPaths paths_;
  std::unique_ptr<qmp::QmpClient> monitor_;
};

}  // namespace vmpod::cpuserver
