// What tells one guest from another that was forked from the same snapshot:
// its VM generation ID (QEMU's vmgenid device; Linux reseeds its RNG when
// the ID changes under it) and its NIC's MAC address. Both reach QEMU's
// command line, so they are checked here before they get there.
#pragma once

#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod::cpuserver {

// A random UUID (version 4), "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".
std::string new_generation_id();
// A random locally administered unicast MAC, "02:xx:xx:xx:xx:xx" style.
std::string new_mac();
// A random 128-bit id as 32 lower-case hex digits, the shape of
// /etc/machine-id.
std::string new_machine_id();

Status check_generation_id(std::string_view id);
Status check_mac(std::string_view mac);

}  // namespace vmpod::cpuserver
