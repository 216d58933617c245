#include <vmpod/libvirt/ram_backing.h>

#include <filesystem>

#include <vmpod/base/file.h>

namespace vmpod::libvirt {

namespace {

// Whether /proc/self/mounts lists `dir` as a mount point (paths there
// escape spaces as \040; vmpod's own paths have none).
Result<bool> is_mount_point(const std::string& dir) {
  auto mounts = read_file("/proc/self/mounts");
  if (!mounts) return fail(mounts.error());
  return mounts->find(" " + dir + " ") != std::string::npos;
}

}  // namespace

Result<std::unique_ptr<cpuserver::Podfs>> mount_ram_backing(const RamBackingConfig& config) {
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
  return cpuserver::Podfs::mount(podfs);
}

}  // namespace vmpod::libvirt
