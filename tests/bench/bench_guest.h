// What the benchmarks that boot the guest image under TCG share: its spec,
// a size label for figure names, running a command through its agent, and
// filling half its RAM so that a migration or a restore has RAM to carry.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <vmpod/base/result.h>
#include <vmpod/cpuserver/qemu.h>

namespace vmpod::bench {

// Generous under TCG on a loaded machine: a 2 GiB guest boots in 10-20 s.
inline constexpr auto kBootTimeout = std::chrono::seconds(240);

// The built guest image under TCG.
cpuserver::GuestSpec guest_spec(const std::string& name, uint64_t memory);
// 256MiB, 2GiB: a figure name has no spaces.
std::string size_label(uint64_t bytes);
// Runs `command` in the guest (waiting for its agent, so for its boot) and
// fails unless it exits 0.
Status run_in_guest(const std::string& agent_socket, const std::string& command, const std::string& what);
// Fills half the guest's RAM with a pattern and holds it until the guest ends.
Status fill_half(const std::string& agent_socket, uint64_t memory);

}  // namespace vmpod::bench
