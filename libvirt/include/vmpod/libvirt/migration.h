// `virsh migrate` of a domain whose RAM is in memory pods, without copying
// the RAM: libvirt moves the device state as it always does, and the RAM
// file on the source's podfs reappears on the destination's over the same
// regions. libvirt 9.0 would stream every page; vmpod turns on QEMU's
// x-ignore-shared on both QEMUs so that shared RAM stays out of the stream.
//
// The steps, each where libvirt gives vmpod a hand in (rpc.h names the
// calls, the relay and the hook do them):
//   source relay, Begin3 call     x-ignore-shared on the source QEMU (through
//                                 vmpod's monitor, or libvirt's for a domain
//                                 defined without the relay), dirty pages written back
//   source relay, Begin3 reply    the RAM file's regions, and whether the guest
//                                 runs, into the domain XML that goes to the
//                                 destination (<vmpod:ram>)
//   destination hook, migrate     takes <vmpod:ram> out of the XML (the tokens
//                                 stay root's, in the migration directory) and
//                                 gives QEMU a second monitor, vmpod's
//   destination hook, prepare     adopts the regions as the domain's pc.ram
//   destination hook, started     x-ignore-shared on the new QEMU (vmpod's monitor)
//   source relay, Perform3 call   pauses the guest and writes its last dirty
//                                 pages back: the destination QEMU reads guest
//                                 RAM while it loads the devices (virtio rings),
//                                 before libvirt would let anyone in again
//   source relay, Perform3 reply  the source's file lets go of the regions
//   destination relay, Finish3 reply  the destination's file owns them, and
//                                 the guest runs again if it ran before
//   source relay, Confirm3        if the migration was cancelled, the source's
//                                 file owns them again and the guest runs there
// Until a side owns the regions, its unlink (libvirt removing the domain's
// directory) leaves them: a failure at any step loses no page. The guest's
// downtime is Perform3 and Finish3: 80 to 210 ms here under TCG, for any
// RAM size (docs/performance.md).
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include <vmpod/base/result.h>
#include <vmpod/libvirt/rpc.h>

namespace vmpod::libvirt {

// The namespace of <vmpod:ram regions='...'/>, apart from the user's
// <vmpod:memory> element, and seen only between Begin3 and the migrate hook.
inline constexpr std::string_view kMigrationNamespace = "https://vmpod.dev/xmlns/libvirt/1/migration";
// The file libvirt's QEMU maps as the guest's RAM in the domain's directory.
inline constexpr std::string_view kRamFile = "pc.ram";

// The domain XML with <vmpod:ram regions='HANDOVER' running='yes|no'/> in
// its <metadata>.
Result<std::string> with_ram_handover(std::string_view domain_xml, std::string_view handover, bool running);

struct IncomingDomain {
  std::string xml;                      // what the destination's libvirt runs
  std::optional<std::string> handover;  // from <vmpod:ram>; none: not vmpod's
  bool running = false;                 // the guest ran when its move began
};
// The incoming XML without <vmpod:ram>, and, when it had one, with vmpod's
// QMP monitor at `monitor_socket` on QEMU's command line (replacing one
// from an earlier move).
Result<IncomingDomain> incoming_domain(std::string_view domain_xml, const std::string& monitor_socket);

// A domain whose RAM is a file (on podfs: <memoryBacking><source
// type='file'/>) with vmpod's own QMP monitor on QEMU's command line, at
// monitor_socket() for its UUID (one is added if the XML has none), so
// that libvirt keeps its monitor to itself. The relay gives it to each
// such domain libvirt defines or creates; any other domain, and XML that
// libvirt will refuse itself, is unchanged.
Result<std::string> with_vmpod_monitor(std::string_view domain_xml, const std::string& memory_backing_dir);

// Where a host keeps what moves in with a domain, next to its podfs: the
// regions waiting for prepare (root's alone), and vmpod's monitor socket.
std::string migration_dir(const std::string& memory_backing_dir);
std::string handover_path(const std::string& memory_backing_dir, const std::string& uuid);
std::string monitor_dir(const std::string& memory_backing_dir, const std::string& uuid);
std::string monitor_socket(const std::string& memory_backing_dir, const std::string& uuid);
// There while a guest that ran moves in: the destination resumes it.
std::string resume_path(const std::string& memory_backing_dir, const std::string& uuid);

// A podfs file's side of the handover (podfs_placement.h).
Result<std::string> ram_regions(const std::string& ram_file);
Status set_ram_owned(const std::string& ram_file, bool owned);
bool ram_owned(const std::string& ram_file);

// One host's side, for its relay: the domains of its libvirtd, asked
// through libvirt's own client library as root.
class MigrationHost {
 public:
  MigrationHost(std::string memory_backing_dir, std::string libvirtd_socket)
      : backing_(std::move(memory_backing_dir)), libvirtd_socket_(std::move(libvirtd_socket)) {}

  const std::string& memory_backing_dir() const { return backing_; }
  // The RAM file of the running domain NAME with id ID, if it is on podfs.
  std::optional<std::string> ram_file(const std::string& name, int id) const;
  // x-ignore-shared on the domain's QEMU (before the migration's job
  // begins: libvirt lets the command through then).
  Status ignore_shared(const std::string& uuid) const;
  Result<bool> running(const std::string& uuid) const;
  Status suspend(const std::string& uuid) const;
  Status resume(const std::string& uuid) const;

 private:
  template <class Call>
  Status on_domain(const std::string& uuid, std::string_view what, Call call) const;

  std::string backing_;
  std::string libvirtd_socket_;
};

// x-ignore-shared on the QEMU behind a QMP socket.
Status ignore_shared_at(const std::string& qmp_socket);

// One relayed connection's part in the migrations of vmpod's domains (the
// steps at the top): it sees every packet, acts where a step needs it and
// may change the packet; packets of other domains and calls pass as they
// are. A step that cannot be done fails the call with the reason, which
// virsh shows, and libvirt then leaves the guest on the source. It also
// gives each domain with its RAM on podfs that a client defines or creates
// vmpod's monitor (with_vmpod_monitor).
class MigrationRelay {
 public:
  explicit MigrationRelay(const MigrationHost& host) : host_(host) {}
  Result<rpc::UriRewriter::FromClient> from_client(std::string packet);
  Result<std::string> from_daemon(std::string packet);

 private:
  void finished_here(std::string_view finish3_reply);
  struct Step {
    rpc::MigrationCall call;
    std::string ram_file;
    bool paused_here = false;  // Perform3: the relay paused the guest
  };
  // Where the reply needs the relay too (Begin3's XML, Perform3's end),
  // by serial.
  std::mutex mutex_;
  std::map<uint32_t, Step> awaiting_reply_;
  // Guests (by uuid) the relay paused for Perform3, to run again if the
  // move is cancelled.
  std::set<std::string> paused_;
  const MigrationHost& host_;
};

}  // namespace vmpod::libvirt
