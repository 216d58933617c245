// Where the files of a podfs directory go, set as an extended attribute on
// the directory (as CephFS sets a directory's layout): the files created
// below it from then on have their regions on those memory pods, striped
// that way; files already there keep theirs. libvirt's hook sets it on a
// domain's directory before QEMU creates pc.ram there.
//
//   setfattr -n user.vmpod.placement -v 'pods=2 stripe=1M' DIR   (2: the two with most free pages)
//   setfattr -n user.vmpod.placement -v 'pods=mem0,mem3' DIR
//   getfattr -n user.vmpod.placement FILE-OR-DIR    ->  pods=mem0,mem3 stripe=1048576
//   getfattr -n user.vmpod.memory-pods MOUNT        ->  mem0,mem1,mem2,mem3
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/base/result.h>

namespace vmpod::cpuserver {

inline constexpr std::string_view kPlacementXattr = "user.vmpod.placement";
inline constexpr std::string_view kMemoryPodsXattr = "user.vmpod.memory-pods";

struct PlacementRequest {
  unsigned pod_count = 0;            // this many pods, the ones with most free pages
  std::vector<std::string> pod_ids;  // or these
  uint64_t stripe_bytes = 0;         // 0: the mount's stripe
};

// "pods=N|ID,ID... stripe=SIZE", either part optional, in any order.
Result<PlacementRequest> parse_placement(std::string_view text);
std::string format_placement(const std::vector<std::string>& pod_ids, uint64_t stripe_bytes);
// "ID,ID...", as kMemoryPodsXattr and format_placement write them.
std::vector<std::string> split_pod_ids(std::string_view text);

}  // namespace vmpod::cpuserver
