#include <vmpod/libvirt/hook.h>

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vmpod/base/file.h>
#include <vmpod/cpuserver/podfs_placement.h>
#include <vmpod/libvirt/domain.h>
#include <vmpod/libvirt/migration.h>

namespace vmpod::libvirt {

namespace {

constexpr std::string_view kHookMarker = "# vmpod: installed by `vmpod libvirt install`";

// The memory pods of the podfs at `dir`; fails when no podfs is there.
Result<std::vector<std::string>> backing_pods(const std::string& dir) {
  char value[4096];
  ssize_t n = ::getxattr(dir.c_str(), std::string(cpuserver::kMemoryPodsXattr).c_str(), value, sizeof(value));
  if (n < 0) {
    return fail(ErrorCode::kUnavailable,
                fmt::format("no podfs at {} ({}): start `vmpod libvirt backing` before the domain", dir,
                            std::strerror(errno)));
  }
  return cpuserver::split_pod_ids(std::string_view(value, static_cast<size_t>(n)));
}

// What podfs would refuse, said with the pods there are.
Status check_placement(const std::string& placement, const std::vector<std::string>& pods) {
  auto request = cpuserver::parse_placement(placement);
  if (!request) return fail(request.error());
  std::string here = fmt::format("{}", fmt::join(pods, ", "));
  if (request->pod_count > pods.size()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("<vmpod:memory pods='{}'>: the backing has {} memory "
                                                         "pods ({})",
                                                         request->pod_count, pods.size(), here));
  }
  for (const auto& id : request->pod_ids) {
    if (std::find(pods.begin(), pods.end(), id) == pods.end()) {
      return fail(ErrorCode::kNotFound, fmt::format("<vmpod:memory>: no memory pod {} (the backing has {})", id, here));
    }
  }
  return {};
}

struct Owner {
  uid_t uid;
  gid_t gid;
};

// "+UID" or a name, looked up as libvirt looks it up.
Result<unsigned> id_of(const std::string& text, bool user) {
  if (text.size() > 1 && text[0] == '+') {
    try {
      size_t used = 0;
      unsigned long id = std::stoul(text.substr(1), &used);
      if (used == text.size() - 1 && id < 0xFFFFFFFFul) return static_cast<unsigned>(id);
    } catch (const std::exception&) {
    }
    return fail(ErrorCode::kInvalidArgument, "seclabel: '" + text + "' is not +ID");
  }
  if (user) {
    if (const passwd* pw = ::getpwnam(text.c_str())) return static_cast<unsigned>(pw->pw_uid);
  } else if (const group* gr = ::getgrnam(text.c_str())) {
    return static_cast<unsigned>(gr->gr_gid);
  }
  return fail(ErrorCode::kNotFound, fmt::format("seclabel: no {} '{}'", user ? "user" : "group", text));
}

// Who the domain's QEMU runs as: its own DAC label, else qemu.conf's user
// and group, which libvirtd gave libvirt/qemu when it started. libvirt
// labels only directories it makes, and this one the hook makes.
Result<Owner> qemu_owner(const Domain& domain, const std::string& parent) {
  if (domain.dac_label) {
    size_t colon = domain.dac_label->find(':');
    if (colon == std::string::npos) return fail(ErrorCode::kInvalidArgument, "seclabel: '" + *domain.dac_label + "' is not USER:GROUP");
    auto uid = id_of(domain.dac_label->substr(0, colon), true);
    if (!uid) return fail(uid.error());
    auto gid = id_of(domain.dac_label->substr(colon + 1), false);
    if (!gid) return fail(gid.error());
    return Owner{*uid, *gid};
  }
  struct stat st {};
  if (::stat(parent.c_str(), &st) != 0) return fail_errno("cannot stat " + parent, errno);
  return Owner{st.st_uid, st.st_gid};
}

// A domain moving in (migrate, below) finds its RAM: pc.ram in its
// directory over the regions the source handed over, the QEMU user's.
Status adopt_incoming(const std::string& backing, const Domain& domain, const std::string& dir, const Owner& owner) {
  const std::string stash = handover_path(backing, domain.uuid);
  auto handover = read_file(stash);
  if (!handover) return fail(handover.error().context("the regions of incoming domain " + domain.name));
  const std::string adoption = std::string(kRamFile) + " " + *handover;
  if (::setxattr(dir.c_str(), std::string(cpuserver::kAdoptXattr).c_str(), adoption.data(), adoption.size(), 0) != 0) {
    return fail_errno("podfs refused the regions of incoming domain " + domain.name, errno);
  }
  const std::string ram = dir + "/" + std::string(kRamFile);
  if (::chown(ram.c_str(), owner.uid, owner.gid) != 0) return fail_errno("cannot give " + ram + " to the domain's QEMU user", errno);
  ::unlink(stash.c_str());
  return {};
}

// The host's migration directory (migration.h): others may pass through
// it to their own entries, not list it.
Status make_migration_dir(const std::string& backing) {
  std::error_code error;
  std::filesystem::create_directories(migration_dir(backing), error);
  if (error) return fail_errno("cannot create " + migration_dir(backing), error.value());
  if (::chmod(migration_dir(backing).c_str(), 0711) != 0) return fail_errno("cannot chmod " + migration_dir(backing), errno);
  return {};
}

// A directory for vmpod's monitor socket that the domain's QEMU can make it in.
Status make_monitor_dir(const std::string& backing, const Domain& domain, const Owner& owner) {
  if (domain.uuid.empty()) return fail(ErrorCode::kInvalidArgument, "vmpod's monitor needs the domain's <uuid>");
  VMPOD_TRY_CTX(make_migration_dir(backing), "domain " + domain.name);
  const std::string monitor = monitor_dir(backing, domain.uuid);
  if (::mkdir(monitor.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("cannot create " + monitor, errno);
  if (::chown(monitor.c_str(), owner.uid, owner.gid) != 0) return fail_errno("cannot give " + monitor + " to QEMU", errno);
  return {};
}

Status prepare(const std::string& backing, const Domain& domain) {
  const bool incoming = !domain.uuid.empty() && ::access(handover_path(backing, domain.uuid).c_str(), F_OK) == 0;
  if (!domain.placement && !incoming && !domain.vmpod_monitor) return {};
  if (!domain.file_backed) {
    return fail(ErrorCode::kInvalidArgument,
                "<vmpod:memory> needs <memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>");
  }
  if (domain.id < 0) return fail(ErrorCode::kInvalidArgument, "prepare: the domain XML has no id");
  auto pods = backing_pods(backing);
  if (!pods) return fail(pods.error());
  if (domain.placement) VMPOD_TRY_CTX(check_placement(*domain.placement, *pods), "domain " + domain.name);
  // libvirt makes this directory next, finds it there, and chowns it to its
  // QEMU user; QEMU then creates pc.ram in it on the placement.
  const std::string dir = backing + "/" + domain_ram_dir(domain);
  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path(), error);
  if (error) return fail_errno("cannot create " + std::filesystem::path(dir).parent_path().string(), error.value());
  auto owner = qemu_owner(domain, std::filesystem::path(dir).parent_path());
  if (!owner) return fail(owner.error());
  bool made = ::mkdir(dir.c_str(), 0700) == 0;
  if (!made && errno != EEXIST) return fail_errno("cannot create " + dir, errno);
  Status placed;
  if (domain.placement && ::setxattr(dir.c_str(), std::string(cpuserver::kPlacementXattr).c_str(),
                                     domain.placement->data(), domain.placement->size(), 0) != 0) {
    placed = fail_errno(fmt::format("podfs refused the placement '{}' of {}", *domain.placement, dir), errno);
  } else if (::chown(dir.c_str(), owner->uid, owner->gid) != 0) {
    placed = fail_errno("cannot give " + dir + " to the domain's QEMU user", errno);
  } else if (incoming) {
    placed = adopt_incoming(backing, domain, dir, *owner);
  }
  if (placed && (domain.vmpod_monitor || incoming)) placed = make_monitor_dir(backing, domain, *owner);
  // An adopted pc.ram is not owned yet: its removal leaves the regions.
  if (!placed && made) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  return placed;
}

// The XML of a domain moving in, as the destination runs it: its regions
// kept for prepare, and vmpod's monitor on QEMU's command line. Printed
// for libvirtd, which runs that XML instead; nothing printed: as it was.
Result<std::string> migrate(const std::string& backing, const Domain& domain, std::string_view xml) {
  if (domain.uuid.empty()) return std::string();
  auto incoming = incoming_domain(xml, monitor_socket(backing, domain.uuid));
  if (!incoming) return fail(incoming.error().context("domain " + domain.name));
  if (!incoming->handover) return std::string();
  VMPOD_TRY_CTX(make_migration_dir(backing), "domain " + domain.name);
  VMPOD_TRY_CTX(write_file_atomically(handover_path(backing, domain.uuid), *incoming->handover, 0600),
                "domain " + domain.name);
  // The source paused a running guest for the move; the relay here
  // resumes it once libvirt's Finish is over.
  if (incoming->running) VMPOD_TRY_CTX(write_file(resume_path(backing, domain.uuid), ""), "domain " + domain.name);
  return incoming->xml;
}

// A QEMU that came up for a move reads no RAM from the stream: its file is
// the source's (not owned until the move ends), its RAM shared.
Status started(const std::string& backing, const Domain& domain) {
  if (domain.uuid.empty() || domain.id < 0) return {};
  const std::string socket = monitor_socket(backing, domain.uuid);
  const std::string ram = backing + "/" + domain_ram_dir(domain) + "/" + std::string(kRamFile);
  if (::access(socket.c_str(), F_OK) != 0 || ram_owned(ram)) return {};
  return ignore_shared_at(socket);
}

// libvirt removes the directory itself when the domain stops; whatever is
// left (a QEMU that died before libvirt could) goes here, and with its
// files their regions.
Status release(const std::string& backing, const Domain& domain) {
  if (domain.id < 0) return {};
  const std::string dir = backing + "/" + domain_ram_dir(domain);
  std::error_code error;
  std::filesystem::remove_all(dir, error);
  if (error && error != std::errc::no_such_file_or_directory) return fail_errno("cannot remove " + dir, error.value());
  if (!domain.uuid.empty()) {
    std::filesystem::remove_all(monitor_dir(backing, domain.uuid), error);
    ::unlink(handover_path(backing, domain.uuid).c_str());
    ::unlink(resume_path(backing, domain.uuid).c_str());
  }
  return {};
}

Result<std::string> shell_quoted(const std::string& text) {
  if (text.find('\'') != std::string::npos || text.find('\n') != std::string::npos) {
    return fail(ErrorCode::kInvalidArgument, "cannot quote " + text + " for the hook script");
  }
  return "'" + text + "'";
}

}  // namespace

Result<std::string> run_qemu_hook(const std::string& memory_backing_dir, std::string_view operation,
                                  std::string_view sub_operation, std::string_view domain_xml) {
  enum class Step { kPrepare, kStarted, kRelease, kMigrate, kNone };
  Step step = operation == "prepare" && sub_operation == "begin"   ? Step::kPrepare
              : operation == "started" && sub_operation == "begin" ? Step::kStarted
              : operation == "release" && sub_operation == "end"   ? Step::kRelease
              : operation == "migrate" && sub_operation == "begin" ? Step::kMigrate
                                                                   : Step::kNone;
  if (step == Step::kNone) return std::string();
  auto domain = parse_domain(domain_xml);
  if (!domain) return fail(domain.error());
  Status done;
  switch (step) {
    case Step::kMigrate: return migrate(memory_backing_dir, *domain, domain_xml);
    case Step::kPrepare: done = prepare(memory_backing_dir, *domain); break;
    case Step::kStarted: done = started(memory_backing_dir, *domain); break;
    default: done = release(memory_backing_dir, *domain); break;
  }
  if (!done) return fail(done.error());
  return std::string();
}

Status install_qemu_hook(const std::string& hooks_dir, const std::string& vmpod_binary,
                         const std::string& memory_backing_dir) {
  auto binary = shell_quoted(vmpod_binary);
  if (!binary) return fail(binary.error());
  auto backing = shell_quoted(memory_backing_dir);
  if (!backing) return fail(backing.error());
  const std::string path = hooks_dir + "/qemu";
  std::string script = fmt::format("#!/bin/sh\n{}, removed by `vmpod libvirt uninstall`.\n"
                                   "exec {} libvirt hook --memory-backing-dir {} \"$@\"\n",
                                   kHookMarker, *binary, *backing);
  auto existing = read_file(path);
  if (existing && *existing == script) return {};
  if (existing && existing->find(kHookMarker) == std::string::npos) {
    return fail(ErrorCode::kAlreadyExists,
                path + " is another program's hook; vmpod's would replace it (merge them by hand)");
  }
  std::error_code error;
  std::filesystem::create_directories(hooks_dir, error);
  if (error) return fail_errno("cannot create " + hooks_dir, error.value());
  return write_file_atomically(path, script, 0755);
}

Status uninstall_qemu_hook(const std::string& hooks_dir) {
  const std::string path = hooks_dir + "/qemu";
  auto existing = read_file(path);
  if (!existing || existing->find(kHookMarker) == std::string::npos) return {};
  if (::unlink(path.c_str()) != 0) return fail_errno("cannot remove " + path, errno);
  return {};
}

}  // namespace vmpod::libvirt
