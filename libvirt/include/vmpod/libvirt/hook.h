// libvirt's QEMU hook, /etc/libvirt/hooks/qemu: libvirtd runs it as
// `qemu DOMAIN OPERATION SUB-OPERATION EXTRA` with the domain's XML on stdin
// and aborts a start when it fails, showing its stderr. vmpod's hook places
// a domain's RAM at prepare (the podfs placement of its directory, from its
// vmpod element) and makes sure at release that none of it is left. A
// domain without the element is left alone. For a domain moving in without
// its RAM (migration.h) it rewrites the XML at migrate, adopts the RAM at
// prepare and sets QEMU's x-ignore-shared at started. libvirtd looks for
// the hook when it starts: install before starting it.
#pragma once

#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod::libvirt {

inline constexpr std::string_view kHooksDir = "/etc/libvirt/hooks";

// One call of the hook: what it prints for libvirtd (the XML a migrate
// runs instead; empty: nothing). A failed prepare leaves no directory it made.
Result<std::string> run_qemu_hook(const std::string& memory_backing_dir, std::string_view operation,
                     std::string_view sub_operation, std::string_view domain_xml);

// Writes HOOKS_DIR/qemu, a script that runs `VMPOD libvirt hook`.
// kAlreadyExists when a hook that is not vmpod's is there; twice changes
// nothing. uninstall removes only vmpod's.
Status install_qemu_hook(const std::string& hooks_dir, const std::string& vmpod_binary,
                         const std::string& memory_backing_dir);
Status uninstall_qemu_hook(const std::string& hooks_dir);

}  // namespace vmpod::libvirt
