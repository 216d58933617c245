// vmpod's settings in libvirt's qemu.conf. They live in one block between
// two marker lines that `vmpod libvirt install` writes and `uninstall`
// removes, so every other line stays the administrator's. libvirtd reads
// qemu.conf when it starts: install before starting it.
#pragma once

#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod::libvirt {

inline constexpr std::string_view kQemuConfPath = "/etc/libvirt/qemu.conf";

struct QemuConfSettings {
  // Where libvirt puts file-backed guest RAM: a podfs mount.
  std::string memory_backing_dir;
};

// `conf` with vmpod's block set to `settings`, replacing an earlier block.
// kAlreadyExists when the administrator's lines already set a key the block
// would set: libvirt would silently take the later one.
Result<std::string> with_vmpod_block(std::string_view conf, const QemuConfSettings& settings);
// `conf` without vmpod's block (unchanged when it has none).
std::string without_vmpod_block(std::string_view conf);

// The same on the file, rewritten atomically with its mode kept; doing it
// twice changes nothing.
Status install_qemu_conf(const std::string& path, const QemuConfSettings& settings);
Status uninstall_qemu_conf(const std::string& path);

}  // namespace vmpod::libvirt
