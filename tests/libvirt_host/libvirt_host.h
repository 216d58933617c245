// A libvirt host for the tests and benchmarks that drive libvirt: the guest
// image where libvirt's QEMU user can read it, `vmpod libvirt backing` on
// memory pods the caller started, `vmpod libvirt install`, real virtlogd
// and libvirtd (there is no init system here) and `vmpod libvirt relay` for
// vmpod:///system, each a child process stopped by process id. It changes /etc/libvirt/qemu.conf and
// /etc/libvirt/hooks/qemu, and puts them back when it stops.
//
// Another host on this machine, for migrations between the two: its
// virtlogd and libvirtd run in a private mount namespace of their own, over
// DIR/host/ bound at /etc/libvirt (a copy with its own host UUID),
// /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt;
// its sockets are reached at DIR/host/run/. Start the machine's own host
// first: the copy is taken of its /etc/libvirt.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/base/subprocess.h>
#include <vmpod/net/socket.h>

namespace vmpod::testing {

inline constexpr std::string_view kFileBacking =
    "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>";

// `<metadata><vmpod:memory ATTRIBUTES/></metadata>`
std::string vmpod_element(const std::string& attributes);

struct CommandOutput {
  int status = -1;     // as system() returns it
  std::string output;  // stdout and stderr
};
CommandOutput run_command(const std::string& command);

struct LibvirtHostConfig {
  std::string dir;  // logs, domain XML, the image copy, the podfs mount (ram/)
  std::string vmpod_binary;
  std::string image_dir;  // vmlinux, initramfs.cpio.gz
  std::vector<net::SocketAddress> memory_pods;
  // Empty: the machine's own libvirt. Else another host with this UUID.
  std::string host_uuid;
};

class LibvirtHost {
 public:
  // kAlreadyExists when a libvirtd answers already: this host starts its own.
  static Result<std::unique_ptr<LibvirtHost>> start(const LibvirtHostConfig& config);
  // Destroys and undefines the domains defined through it, stops the relay,
  // libvirtd, virtlogd and the backing (which unmounts), and uninstalls.
  ~LibvirtHost();

  const std::string& dir() const { return config_.dir; }
  std::string ram_dir() const { return config_.dir + "/ram"; }
  // Where libvirt puts the running domains' RAM directories.
  std::string domains_dir() const { return ram_dir() + "/libvirt/qemu"; }
  std::string agent_socket(const std::string& domain) const { return config_.dir + "/" + domain + ".agent"; }
  // vmpod:///system of this host, and libvirtd's own URI of it (quote
  // them for a shell).
  std::string uri() const;
  std::string libvirtd_uri() const;
  // The directory bound at /run/libvirt (another host), else /run/libvirt.
  std::string run_dir() const;
  Subprocess& backing() { return backing_; }
  Subprocess& libvirtd() { return libvirtd_; }
  Subprocess& relay() { return relay_; }

  // virsh -c vmpod:///system ARGUMENTS: its output, or an error carrying it.
  Result<std::string> virsh(const std::string& arguments);
  // The guest image under TCG as domain `name`, of `memory_mib`, its serial console
  // in DIR/NAME.console and its agent channel at agent_socket(name);
  // `extra` (<memoryBacking>, <metadata>) goes inside its <domain>.
  Status define(const std::string& name, const std::string& extra, unsigned memory_mib = 256);
  // `virsh migrate --live` of the running domain to `to`, driven by the
  // client, the migration stream on loopback at `port`. Its agent socket
  // moves to the destination's directory: both hosts share this machine's
  // /tmp, and the source's libvirt removes its own when the domain leaves.
  Status migrate(const std::string& domain, LibvirtHost& to, int port);

 private:
  explicit LibvirtHost(LibvirtHostConfig config) : config_(std::move(config)) {}
  Status start_all();
  bool isolated() const { return !config_.host_uuid.empty(); }
  // ARGV as this host runs it: in its mount namespace, if it has one.
  std::vector<std::string> on_host(std::vector<std::string> argv) const;
  std::string bind_script() const;  // sh: the mounts of this host's namespace
  Status prepare_isolated();

  LibvirtHostConfig config_;
  Subprocess backing_;
  Subprocess virtlogd_;
  Subprocess libvirtd_;
  Subprocess relay_;
  bool installed_ = false;
  std::vector<std::string> defined_;
};

}  // namespace vmpod::testing
