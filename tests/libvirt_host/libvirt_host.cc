#include "libvirt_host.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include <vmpod/base/file.h>
#include <vmpod/cpuserver/qemu.h>

namespace vmpod::testing {

namespace {

using namespace std::chrono_literals;

bool podfs_mounted(const std::string& dir) {
  auto mounts = read_file("/proc/self/mounts");
  return mounts && mounts->find(" " + dir + " fuse.vmpod ") != std::string::npos;
}

template <class Ready>
Status wait_until(const std::string& what, std::chrono::seconds timeout, Ready ready) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return fail(ErrorCode::kUnavailable, fmt::format("{}: not within {}s", what, timeout.count()));
    }
    std::this_thread::sleep_for(100ms);
  }
  return {};
}

bool answers(const std::string& uri) { return run_command("virsh -c '" + uri + "' version").status == 0; }

}  // namespace

std::string vmpod_element(const std::string& attributes) {
  return fmt::format("<metadata><vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' {}/></metadata>",
                     attributes);
}

CommandOutput run_command(const std::string& command) {
  CommandOutput result;
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  result.status = ::pclose(pipe);
  return result;
}

// What another host binds over the machine's libvirt directories.
constexpr std::array<std::pair<const char*, const char*>, 5> kHostBinds{{{"etc", "/etc/libvirt"},
                                                                        {"run", "/run/libvirt"},
                                                                        {"lib", "/var/lib/libvirt"},
                                                                        {"cache", "/var/cache/libvirt"},
                                                                        {"log", "/var/log/libvirt"}}};

std::string LibvirtHost::run_dir() const { return isolated() ? config_.dir + "/host/run" : "/run/libvirt"; }

std::string LibvirtHost::uri() const {
  return isolated() ? "vmpod:///system?socket=" + run_dir() + "/virtvmpodd-sock" : "vmpod:///system";
}

std::string LibvirtHost::libvirtd_uri() const {
  return isolated() ? "qemu+unix:///system?socket=" + run_dir() + "/libvirt-sock" : "qemu:///system";
}

std::string LibvirtHost::bind_script() const {
  std::string script;
  for (const auto& [dir, target] : kHostBinds) {
    script += fmt::format("mount --bind '{}/host/{}' '{}' && ", config_.dir, dir, target);
  }
  return script;
}

std::vector<std::string> LibvirtHost::on_host(std::vector<std::string> argv) const {
  if (!isolated()) return argv;
  std::vector<std::string> wrapped{"unshare", "--mount", "--propagation", "private", "sh", "-c",
                                   bind_script() + "exec \"$0\" \"$@\""};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

// The copy of the machine's /etc/libvirt with this host's UUID, vmpod
// installed in it for this host's podfs.
Status LibvirtHost::prepare_isolated() {
  for (const auto& [dir, target] : kHostBinds) {
    std::error_code error;
    std::filesystem::create_directories(config_.dir + "/host/" + dir, error);
    if (error) return fail_errno("creating the host's " + std::string(dir), error.value());
  }
  auto copied = run_command(fmt::format("cp -a /etc/libvirt/. '{}/host/etc/'", config_.dir));
  if (copied.status != 0) return fail(ErrorCode::kInternal, "copying /etc/libvirt: " + copied.output);
  const std::string conf = config_.dir + "/host/etc/libvirtd.conf";
  auto text = read_file(conf);
  if (!text) return fail(text.error());
  VMPOD_TRY_CTX(write_file(conf, *text + fmt::format("\nhost_uuid = \"{}\"\n", config_.host_uuid)), conf);
  auto install = run_command(fmt::format(
      "unshare --mount --propagation private sh -c \"{0}'{1}' libvirt uninstall && '{1}' libvirt install "
      "--memory-backing-dir '{2}'\"",
      bind_script(), config_.vmpod_binary, ram_dir()));
  if (install.status != 0) return fail(ErrorCode::kInternal, "vmpod libvirt install on the host: " + install.output);
  return {};
}

Result<std::unique_ptr<LibvirtHost>> LibvirtHost::start(const LibvirtHostConfig& config) {
  if (config.host_uuid.empty() && answers("qemu:///system")) {
    return fail(ErrorCode::kAlreadyExists, "a libvirtd runs already; stop it: the tests start their own");
  }
  std::unique_ptr<LibvirtHost> host(new LibvirtHost(config));
  VMPOD_TRY_CTX(host->start_all(), "libvirt host");
  return host;
}

Status LibvirtHost::start_all() {
  // libvirt's QEMU runs as libvirt-qemu: it must reach the kernel, the
  // initramfs and its sockets here.
  if (::chmod(config_.dir.c_str(), 0755) != 0) return fail_errno("chmod " + config_.dir, errno);
  for (const char* file : {"vmlinux", "initramfs.cpio.gz"}) {
    std::error_code error;
    std::filesystem::copy_file(config_.image_dir + "/" + file, config_.dir + "/" + file,
                               std::filesystem::copy_options::overwrite_existing, error);
    if (error) return fail_errno(fmt::format("copying {} from {}", file, config_.image_dir), error.value());
  }

  std::vector<std::string> backing{config_.vmpod_binary, "libvirt", "backing", "--dir", ram_dir()};
  for (const auto& pod : config_.memory_pods) {
    backing.push_back("--memory-pod");
    backing.push_back(pod.to_string());
  }
  auto started = Subprocess::spawn(backing, config_.dir + "/backing.log", true);
  if (!started) return fail(started.error().context("vmpod libvirt backing"));
  backing_ = std::move(*started);
  VMPOD_TRY_CTX(wait_until("podfs mounted", 10s, [&] { return podfs_mounted(ram_dir()); }), ram_dir());

  if (isolated()) {
    VMPOD_TRY_CTX(prepare_isolated(), "host " + config_.host_uuid);
  } else {
    auto install = run_command(config_.vmpod_binary + " libvirt install --memory-backing-dir " + ram_dir());
    if (install.status != 0) return fail(ErrorCode::kInternal, "vmpod libvirt install: " + install.output);
    installed_ = true;
  }

  // Another host's daemons keep their pid files to themselves.
  std::vector<std::string> virtlogd_argv{"virtlogd"}, libvirtd_argv{"libvirtd"};
  if (isolated()) {
    virtlogd_argv.insert(virtlogd_argv.end(), {"--pid-file", config_.dir + "/virtlogd.pid"});
    libvirtd_argv.insert(libvirtd_argv.end(), {"--pid-file", config_.dir + "/libvirtd.pid"});
  }
  auto virtlogd = Subprocess::spawn(on_host(virtlogd_argv), config_.dir + "/virtlogd.log", true);
  if (!virtlogd) return fail(virtlogd.error().context("virtlogd"));
  virtlogd_ = std::move(*virtlogd);
  auto libvirtd = Subprocess::spawn(on_host(libvirtd_argv), config_.dir + "/libvirtd.log", true);
  if (!libvirtd) return fail(libvirtd.error().context("libvirtd"));
  libvirtd_ = std::move(*libvirtd);
  VMPOD_TRY_CTX(wait_until("libvirtd answering", 30s, [&] { return answers(libvirtd_uri()); }), "libvirtd");

  auto relay = Subprocess::spawn({config_.vmpod_binary, "libvirt", "relay", "--socket", run_dir() + "/virtvmpodd-sock",
                                  "--libvirtd-socket", run_dir() + "/libvirt-sock", "--memory-backing-dir", ram_dir()},
                                 config_.dir + "/relay.log", true);
  if (!relay) return fail(relay.error().context("vmpod libvirt relay"));
  relay_ = std::move(*relay);
  return wait_until("vmpod:///system answering", 10s, [&] { return answers(uri()); });
}

LibvirtHost::~LibvirtHost() {
  if (libvirtd_.pid() > 0 && libvirtd_.running()) {
    // Every running domain, also one that moved in: QEMU outlives libvirtd.
    const std::string virsh = "virsh -c '" + libvirtd_uri() + "' ";
    std::string running = run_command(virsh + "list --name").output;
    for (size_t at = 0, end; at < running.size(); at = end + 1) {
      end = running.find('\n', at);
      if (end == std::string::npos) end = running.size();
      std::string domain = running.substr(at, end - at);
      if (!domain.empty()) run_command(virsh + "destroy '" + domain + "'");
    }
    for (const auto& domain : defined_) run_command(virsh + "undefine " + domain);
  }
  relay_.stop(5s);
  libvirtd_.stop(10s);
  virtlogd_.stop(5s);
  // SIGTERM unmounts podfs and deletes the regions of files still there.
  backing_.stop(10s);
  if (installed_) run_command(config_.vmpod_binary + " libvirt uninstall");
}

Result<std::string> LibvirtHost::virsh(const std::string& arguments) {
  auto result = run_command("virsh -c '" + uri() + "' " + arguments);
  if (result.status != 0) return fail(ErrorCode::kInternal, "virsh " + arguments + ": " + result.output);
  return result.output;
}

Status LibvirtHost::define(const std::string& name, const std::string& extra, unsigned memory_mib) {
  std::string xml = fmt::format(R"(<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
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
      <source mode='bind' path='{agent}'/>
      <target type='virtio' name='org.vmpod.agent'/>
    </channel>
    <memballoon model='none'/>
  </devices>
</domain>
)",
                                fmt::arg("name", name), fmt::arg("dir", config_.dir), fmt::arg("extra", extra),
                                fmt::arg("append", cpuserver::kGuestImageAppend),
                                fmt::arg("agent", agent_socket(name)), fmt::arg("memory_mib", memory_mib));
  std::string path = config_.dir + "/" + name + ".xml";
  VMPOD_TRY_CTX(write_file(path, xml), "domain " + name);
  auto defined = virsh("define " + path);
  if (!defined) return fail(defined.error());
  if (std::find(defined_.begin(), defined_.end(), name) == defined_.end()) defined_.push_back(name);
  return {};
}

Status LibvirtHost::migrate(const std::string& domain, LibvirtHost& to, int port) {
  auto xml = virsh("dumpxml --migratable " + domain);
  if (!xml) return fail(xml.error());
  size_t agent = xml->find(agent_socket(domain));
  if (agent == std::string::npos) return fail(ErrorCode::kNotFound, "domain " + domain + " has no agent socket");
  xml->replace(agent, agent_socket(domain).size(), to.agent_socket(domain));
  const std::string path = to.dir() + "/" + domain + ".incoming.xml";
  VMPOD_TRY_CTX(write_file(path, *xml), "migrate " + domain);
  auto moved =
      virsh(fmt::format("migrate --live {} '{}' --migrateuri tcp://127.0.0.1:{} --xml {}", domain, to.uri(), port, path));
  if (!moved) return fail(moved.error());
  return {};
}

}  // namespace vmpod::testing
