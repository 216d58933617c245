// libvirt's own QEMU driver with guest RAM in memory pods: real virtlogd and
// libvirtd started here (there is no init system), podfs mounted by `vmpod
// libvirt backing` as qemu.conf's memory_backing_dir and vmpod's QEMU hook
// (both set by `vmpod libvirt install`), and domains driven with virsh. A
// domain's vmpod element places its RAM on the memory pods it names, the
// RAM goes away with the domain, a placement that cannot be met stops the
// start with vmpod's message and leaves nothing, and a domain with plain
// memory never touches podfs. The test changes /etc/libvirt/qemu.conf and
// /etc/libvirt/hooks/qemu and restores them, also when it fails.
#include <criterion/criterion.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include <vmpod/base/file.h>
#include <vmpod/base/subprocess.h>
#include <vmpod/pods/memory_client.h>

#include "harness.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

constexpr const char* kPodsDomain = "vmpod-test-pods";
constexpr const char* kPlainDomain = "vmpod-test-plain";
constexpr const char* kRefusedDomain = "vmpod-test-refused";
constexpr const char* kFileBacking = "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>";

struct CommandOutput {
  int status = -1;
  std::string output;  // stdout and stderr
};

CommandOutput run_command(const std::string& command) {
  CommandOutput result;
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  cr_assert(pipe != nullptr, "cannot run %s", command.c_str());
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  result.status = ::pclose(pipe);
  return result;
}

std::string virsh(const std::string& arguments) {
  auto result = run_command("virsh -c qemu:///system " + arguments);
  cr_assert_eq(result.status, 0, "virsh %s: %s", arguments.c_str(), result.output.c_str());
  return result.output;
}

std::string vmpod_binary() { return std::getenv("VMPOD_BINARY"); }

// What the test started, stopped in reverse by the fini, also after a
// failed assertion.
struct LibvirtSetup {
  std::string dir;
  Subprocess backing;
  Subprocess virtlogd;
  Subprocess libvirtd;
  bool installed = false;
};

LibvirtSetup& setup() {
  static LibvirtSetup instance;
  return instance;
}

void tear_down() {
  auto& s = setup();
  if (s.libvirtd.pid() > 0 && s.libvirtd.running()) {
    for (const char* domain : {kPodsDomain, kPlainDomain, kRefusedDomain}) {
      run_command(fmt::format("virsh -c qemu:///system destroy {}", domain));
      run_command(fmt::format("virsh -c qemu:///system undefine {}", domain));
    }
  }
  s.libvirtd.stop(10s);
  s.virtlogd.stop(5s);
  // SIGTERM unmounts podfs and deletes the regions of files still there.
  s.backing.stop(10s);
  if (s.installed) {
    run_command(vmpod_binary() + " libvirt uninstall");
    s.installed = false;
  }
  vmpod::testing::stop_all();
}

bool podfs_mounted(const std::string& dir) {
  auto mounts = read_file("/proc/self/mounts");
  return mounts && mounts->find(" " + dir + " fuse.vmpod ") != std::string::npos;
}

template <class Ready>
void wait_until(const char* what, std::chrono::seconds timeout, Ready ready) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    cr_assert(std::chrono::steady_clock::now() < deadline, "%s: not within %lds", what,
              static_cast<long>(timeout.count()));
    std::this_thread::sleep_for(100ms);
  }
}

std::string vmpod_element(const std::string& attributes) {
  return fmt::format("<metadata><vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' {}/></metadata>",
                     attributes);
}

// `extra`: the domain's <memoryBacking> and <metadata>, if any.
std::string domain_xml(const std::string& name, const std::string& dir, const std::string& extra) {
  return fmt::format(R"(<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  {extra}
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{dir}/vmlinux</kernel>
    <initrd>{dir}/initramfs.cpio.gz</initrd>
    <cmdline>{append}</cmdline>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{dir}/{name}.console'/><target port='0'/></serial>
    <channel type='unix'>
      <source mode='bind' path='{dir}/{name}.agent'/>
      <target type='virtio' name='org.vmpod.agent'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
)",
                     fmt::arg("name", name), fmt::arg("dir", dir), fmt::arg("append", cpuserver::kGuestImageAppend),
                     fmt::arg("extra", extra));
}

void define(const std::string& name, const std::string& dir, const std::string& extra) {
  std::string path = dir + "/" + name + ".xml";
  cr_assert(write_file(path, domain_xml(name, dir, extra)).has_value());
  virsh("define " + path);
}

// The memory pods' counters, summed.
pods::MemoryPodStats pod_totals(const std::vector<net::SocketAddress>& pods) {
  pods::MemoryPodStats total;
  for (const auto& address : pods) {
    auto client = pods::MemoryPodClient::connect(address, {});
    cr_assert(client.has_value(), "memory pod: %s", client ? "" : client.error().to_string().c_str());
    auto stats = (*client)->stats();
    cr_assert(stats.has_value(), "stats: %s", stats ? "" : stats.error().to_string().c_str());
    total.regions += stats->regions;
    total.pages_held += stats->pages_held;
    total.bytes_written += stats->bytes_written;
    total.bytes_read += stats->bytes_read;
  }
  return total;
}

size_t entries_in(const std::string& dir) {
  std::error_code error;
  size_t count = 0;
  for (auto it = std::filesystem::directory_iterator(dir, error); !error && it != std::filesystem::directory_iterator();
       it.increment(error)) {
    ++count;
  }
  return count;
}

}  // namespace

Test(libvirt_domain, ram_in_memory_pods_through_libvirts_qemu_driver, .timeout = 400, .fini = tear_down) {
  auto already = run_command("virsh -c qemu:///system version");
  cr_assert_neq(already.status, 0, "a libvirtd runs already; stop it: this test starts its own");

  auto& s = setup();
  s.dir = vmpod::testing::test_dir("libvirt");
  // libvirt's QEMU runs as libvirt-qemu: it must reach the kernel, the
  // initramfs and its sockets here.
  ::chmod(s.dir.c_str(), 0755);
  std::string images = std::getenv("VMPOD_IMAGE_DIR");
  for (const char* file : {"vmlinux", "initramfs.cpio.gz"}) {
    std::filesystem::copy_file(images + "/" + file, s.dir + "/" + file);
  }

  vmpod::testing::GuestOptions options;
  options.pod_capacity_bytes = 512ull << 20;
  auto* cluster = vmpod::testing::start_cluster(s.dir, options);
  const auto& pods = cluster->memory_pod_addresses();

  std::string ram_dir = s.dir + "/ram";
  std::vector<std::string> backing{vmpod_binary(), "libvirt", "backing", "--dir", ram_dir};
  for (const auto& pod : pods) {
    backing.push_back("--memory-pod");
    backing.push_back(pod.to_string());
  }
  auto started = Subprocess::spawn(backing, s.dir + "/backing.log", true);
  cr_assert(started.has_value(), "%s", started ? "" : started.error().to_string().c_str());
  s.backing = std::move(*started);
  wait_until("podfs mounted", 10s, [&] { return podfs_mounted(ram_dir); });

  auto install = run_command(vmpod_binary() + " libvirt install --memory-backing-dir " + ram_dir);
  cr_assert_eq(install.status, 0, "install: %s", install.output.c_str());
  s.installed = true;
  auto again = run_command(vmpod_binary() + " libvirt install --memory-backing-dir " + ram_dir);
  cr_assert_eq(again.status, 0, "a second install: %s", again.output.c_str());
  auto conf = read_file("/etc/libvirt/qemu.conf");
  cr_assert(conf.has_value());
  cr_assert_eq(conf->find("memory_backing_dir = \"" + ram_dir + "\""), conf->rfind("memory_backing_dir = \"" + ram_dir + "\""),
               "installing twice wrote the setting twice");
  cr_assert(std::filesystem::exists("/etc/libvirt/hooks/qemu"), "no hook installed");

  auto virtlogd = Subprocess::spawn({"virtlogd"}, s.dir + "/virtlogd.log", true);
  cr_assert(virtlogd.has_value(), "%s", virtlogd ? "" : virtlogd.error().to_string().c_str());
  s.virtlogd = std::move(*virtlogd);
  auto libvirtd = Subprocess::spawn({"libvirtd"}, s.dir + "/libvirtd.log", true);
  cr_assert(libvirtd.has_value(), "%s", libvirtd ? "" : libvirtd.error().to_string().c_str());
  s.libvirtd = std::move(*libvirtd);
  wait_until("libvirtd answering", 30s, [&] { return run_command("virsh -c qemu:///system version").status == 0; });

  // A domain whose RAM is a file, placed on one memory pod in 2 MiB
  // stripes: the hook sets the placement of the directory libvirt then
  // makes on podfs, and QEMU maps pc.ram there.
  auto before = pod_totals(pods);
  define(kPodsDomain, s.dir, kFileBacking + vmpod_element("pods='1' stripe='2M'"));
  virsh(std::string("start ") + kPodsDomain);
  std::string domain_dir = ram_dir + "/libvirt/qemu";
  std::string ram_file;
  for (const auto& entry : std::filesystem::directory_iterator(domain_dir)) ram_file = entry.path() / "pc.ram";
  cr_assert(!ram_file.empty() && std::filesystem::exists(ram_file), "no pc.ram under %s", domain_dir.c_str());
  cr_assert_eq(std::filesystem::file_size(ram_file), 256ull << 20);
  struct stat st {};
  cr_assert_eq(::stat(ram_file.c_str(), &st), 0);
  cr_assert_neq(st.st_uid, 0u, "pc.ram is root's: libvirt's chown to its QEMU user did not reach podfs");
  auto during = pod_totals(pods);
  cr_assert_eq(during.regions, before.regions + 1, "pc.ram is not on the one memory pod asked for");
  char placement[128] = {};
  ssize_t placed = ::getxattr(ram_file.c_str(), "user.vmpod.placement", placement, sizeof(placement) - 1);
  cr_assert_gt(placed, 0, "pc.ram has no placement: %s", strerror(errno));
  cr_assert(std::string(placement).find(" stripe=2097152") != std::string::npos, "pc.ram placed as %s", placement);
  cr_assert_eq(std::string(placement).find(','), std::string::npos, "pc.ram on more than one pod: %s", placement);

  auto agent = cpuserver::GuestAgent::connect(s.dir + "/" + kPodsDomain + ".agent", 120s);
  cr_assert(agent.has_value(), "guest agent: %s", agent ? "" : agent.error().to_string().c_str());
  auto memcheck = (*agent)->run("vmpod-memcheck --size-mib 64 --seed 23", 120s);
  cr_assert(memcheck.has_value(), "%s", memcheck ? "" : memcheck.error().to_string().c_str());
  cr_assert_eq(memcheck->exit_code, 0, "memcheck: %s", memcheck->output.c_str());
  cr_assert(memcheck->output.find("MEMCHECK verified ok") != std::string::npos, "%s", memcheck->output.c_str());
  // The guest's writes sit in the page cache until written back.
  ::sync();
  auto written = pod_totals(pods);
  cr_assert_geq(written.bytes_written - before.bytes_written, 64ull << 20,
                "the memory pods took %lu bytes of the guest's 64 MiB pattern",
                written.bytes_written - before.bytes_written);
  cr_assert_gt(written.pages_held, before.pages_held);

  // libvirt keeps its own monitor: qemu-monitor-command, suspend, resume.
  auto status = virsh(std::string("qemu-monitor-command ") + kPodsDomain + " '{\"execute\":\"query-status\"}'");
  cr_assert(status.find("\"running\"") != std::string::npos, "%s", status.c_str());
  virsh(std::string("suspend ") + kPodsDomain);
  cr_assert(virsh(std::string("domstate ") + kPodsDomain).find("paused") != std::string::npos);
  virsh(std::string("resume ") + kPodsDomain);
  cr_assert(virsh(std::string("domstate ") + kPodsDomain).find("running") != std::string::npos);
  auto after_resume = (*agent)->run("echo alive", 30s);
  cr_assert(after_resume && after_resume->output.find("alive") != std::string::npos, "the guest did not run on");

  virsh(std::string("destroy ") + kPodsDomain);
  virsh(std::string("undefine ") + kPodsDomain);
  wait_until("the domain's directory removed", 10s, [&] { return entries_in(domain_dir) == 0; });
  auto released = pod_totals(pods);
  cr_assert_eq(released.regions, before.regions, "the domain's regions outlived it");
  cr_assert_eq(released.pages_held, before.pages_held, "the domain's pages outlived it");

  // A placement the backing cannot meet: the start fails with vmpod's
  // reason in virsh's message and leaves no directory and no region.
  define(kRefusedDomain, s.dir, kFileBacking + vmpod_element("pods='9'"));
  auto refused = run_command(std::string("virsh -c qemu:///system start ") + kRefusedDomain);
  cr_assert_neq(refused.status, 0, "a domain asking for 9 memory pods of 2 started");
  cr_assert(refused.output.find("the backing has 2 memory pods") != std::string::npos, "virsh said: %s",
            refused.output.c_str());
  cr_assert_eq(entries_in(domain_dir), 0u, "the refused domain left a directory");
  cr_assert_eq(pod_totals(pods).regions, before.regions, "the refused domain left regions");
  virsh(std::string("undefine ") + kRefusedDomain);

  // A domain with plain memory: libvirt never puts it on podfs.
  define(kPlainDomain, s.dir, "");
  virsh(std::string("start ") + kPlainDomain);
  auto plain_agent = cpuserver::GuestAgent::connect(s.dir + "/" + kPlainDomain + ".agent", 120s);
  cr_assert(plain_agent.has_value(), "plain guest agent: %s", plain_agent ? "" : plain_agent.error().to_string().c_str());
  cr_assert_eq(entries_in(domain_dir), 0u, "a domain with plain memory got a directory on podfs");
  cr_assert_eq(pod_totals(pods).regions, before.regions, "a domain with plain memory got regions");
  virsh(std::string("destroy ") + kPlainDomain);
  virsh(std::string("undefine ") + kPlainDomain);

  // The memory pod under a running domain's RAM dies: that domain fails
  // (its QEMU is stopped, libvirt marks it crashed) within seconds, and
  // libvirtd, the backing and its mount stay up. Last: the pod stays dead.
  define(kPodsDomain, s.dir, kFileBacking + vmpod_element("pods='1'"));
  virsh(std::string("start ") + kPodsDomain);
  ram_file.clear();
  for (const auto& entry : std::filesystem::directory_iterator(domain_dir)) ram_file = entry.path() / "pc.ram";
  char on[128] = {};
  cr_assert_gt(::getxattr(ram_file.c_str(), "user.vmpod.placement", on, sizeof(on) - 1), 0);
  size_t lost_pod = std::string(on).find("pods=mem1 ") == 0 ? 1 : 0;
  cluster->memory_pod_process(lost_pod).kill(SIGKILL);
  wait_until("the domain on the lost pod failed", 20s, [&] {
    return virsh(std::string("domstate --reason ") + kPodsDomain).find("shut off (crashed)") != std::string::npos;
  });
  cr_assert(s.libvirtd.running(), "libvirtd died with the memory pod");
  cr_assert(s.backing.running(), "the backing died with the memory pod");
  cr_assert(podfs_mounted(ram_dir), "podfs went away with the memory pod");
  virsh("list --all");
  virsh(std::string("undefine ") + kPodsDomain);
}
