#include "bench_guest.h"

#include <algorithm>

#include <fmt/format.h>

#include <vmpod/base/units.h>
#include <vmpod/cpuserver/guest_agent.h>

#include "bench_common.h"

namespace vmpod::bench {

cpuserver::GuestSpec guest_spec(const std::string& name, uint64_t memory) {
  cpuserver::GuestSpec guest;
  guest.name = name;
  guest.memory_bytes = memory;
  guest.accel = cpuserver::Accel::kTcg;
  guest.kernel = guest_image_file("vmlinux");
  guest.initrd = guest_image_file("initramfs.cpio.gz");
  guest.append = cpuserver::kGuestImageAppend;
  return guest;
}

std::string size_label(uint64_t bytes) {
  std::string text = format_bytes(bytes);
  text.erase(std::remove(text.begin(), text.end(), ' '), text.end());
  return text;
}

Status run_in_guest(const std::string& agent_socket, const std::string& command, const std::string& what) {
  auto agent = cpuserver::GuestAgent::connect(agent_socket, kBootTimeout);
  if (!agent) return fail(agent.error().context("guest agent"));
  auto ran = (*agent)->run(command, kBootTimeout);
  if (!ran) return fail(ran.error().context(what));
  if (ran->exit_code != 0) return fail(ErrorCode::kInternal, what + ": " + ran->output);
  return {};
}

Status fill_half(const std::string& agent_socket, uint64_t memory) {
  return run_in_guest(agent_socket,
                      fmt::format("vmpod-memcheck --size-mib {} --seed 1 --wait-file /tmp/never >/tmp/fill.out 2>&1 & "
                                  "while ! grep -q written /tmp/fill.out; do sleep 0.2; done",
                                  (memory >> 20) / 2),
                      "filling the guest's RAM");
}

}  // namespace vmpod::bench
