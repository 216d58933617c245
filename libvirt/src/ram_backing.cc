#include <vmpod/libvirt/ram_backing.h>

#include <signal.h>

#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include <vmpod/base/file.h>

namespace vmpod::libvirt {

namespace {

// How soon a lost pod fails its domains.
constexpr std::chrono::milliseconds kWatchPeriod{500};

// Whether /proc/self/mounts lists `dir` as a mount point (paths there
// escape spaces as \040; vmpod's own paths have none).
Result<bool> is_mount_point(const std::string& dir) {
  auto mounts = read_file("/proc/self/mounts");
  if (!mounts) return fail(mounts.error());
  return mounts->find(" " + dir + " ") != std::string::npos;
}

}  // namespace

std::vector<pid_t> processes_mapping(const std::string& path) {
  std::vector<pid_t> pids;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream maps(entry.path() / "maps");
    std::string line;
    while (std::getline(maps, line)) {
      // "start-end perms offset dev inode   PATH": the path is the rest.
      size_t at = line.find(" /");
      if (at == std::string::npos) continue;
      std::string_view mapped = std::string_view(line).substr(at + 1);
      if (mapped == path || mapped == path + " (deleted)") {
        pids.push_back(static_cast<pid_t>(std::stol(name)));
        break;
      }
    }
  }
  return pids;
}

RamBacking::RamBacking(std::string dir, std::unique_ptr<cpuserver::Podfs> podfs)
    : dir_(std::move(dir)), podfs_(std::move(podfs)), watch_(kWatchPeriod, [this] { fail_domains_on_lost_pods(); }) {
  watch_.start();
}

RamBacking::~RamBacking() { watch_.stop(); }

void RamBacking::fail_domains_on_lost_pods() {
  for (const std::string& file : podfs_->files_on_lost_pods()) {
    const std::string path = dir_ + "/" + file;
    for (pid_t pid : processes_mapping(path)) {
      if (!killed_.insert(pid).second) continue;
      // Its RAM cannot be read back: stop it now rather than let it fault
      // on a page that is gone.
      spdlog::error("{} lost pages with a memory pod ({}); killing its QEMU, pid {}", path,
                    podfs_->failure().value_or("lost"), pid);
      ::kill(pid, SIGKILL);
    }
  }
}

Result<std::unique_ptr<RamBacking>> RamBacking::mount(const RamBackingConfig& config) {
  if (config.dir.empty() || config.dir.front() != '/') {
    return fail(ErrorCode::kInvalidArgument, "the memory backing directory must be an absolute path");
  }
  auto mounted = is_mount_point(config.dir);
  if (!mounted) return fail(mounted.error());
  if (*mounted) {
    return fail(ErrorCode::kAlreadyExists,
                config.dir + " is a mount point already (a podfs left behind? umount -l it)");
  }
  std::error_code error;
  std::filesystem::create_directories(config.dir, error);
  if (error) return fail_errno("cannot create " + config.dir, error.value());
  cpuserver::PodfsConfig podfs;
  podfs.mountpoint = config.dir;
  podfs.memory_pods = config.memory_pods;
  podfs.fabric = config.fabric;
  podfs.stripe_bytes = config.stripe_bytes;
  podfs.local_cache_bytes = config.local_cache_bytes;
  // libvirt's QEMU runs as libvirt-qemu; the kernel still checks each
  // file's mode (default_permissions).
  podfs.allow_other = true;
  podfs.owner = "libvirt";
  auto fs = cpuserver::Podfs::mount(podfs);
  if (!fs) return fail(fs.error());
  return std::unique_ptr<RamBacking>(new RamBacking(config.dir, std::move(*fs)));
}

}  // namespace vmpod::libvirt
