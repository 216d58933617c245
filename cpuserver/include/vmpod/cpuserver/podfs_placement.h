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
//
// A file's regions also move from one podfs to another, for a guest that
// moves to another host and keeps its RAM in the memory pods (libvirt's
// migration). Only root reads or writes them, for they carry the regions'
// tokens:
//
//   getfattr -n user.vmpod.regions FILE     ->  size=268435456 stripe=1048576 regions=mem0:7:TOKEN,mem1:9:TOKEN
//   setfattr -n user.vmpod.adopt -v 'NAME size=... stripe=... regions=...' DIR
//                                               (creates DIR/NAME on those regions, not owned)
//   setfattr -n user.vmpod.owned -v no FILE     (its unlink and unmount leave its regions alone)
//   setfattr -n user.vmpod.owned -v yes FILE    (the handover is over: this podfs frees them)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/base/result.h>
#include <vmpod/pods/region_control.h>

namespace vmpod::cpuserver {

inline constexpr std::string_view kPlacementXattr = "user.vmpod.placement";
inline constexpr std::string_view kMemoryPodsXattr = "user.vmpod.memory-pods";
inline constexpr std::string_view kRegionsXattr = "user.vmpod.regions";
inline constexpr std::string_view kAdoptXattr = "user.vmpod.adopt";
inline constexpr std::string_view kOwnedXattr = "user.vmpod.owned";

struct PlacementRequest {
  unsigned pod_count = 0;            // this many pods, the ones with most free pages
  std::vector<std::string> pod_ids;  // or these
  uint64_t stripe_bytes = 0;         // 0: the mount's stripe
};

// "pods=N|ID,ID... stripe=SIZE", either part optional, in any order.
Result<PlacementRequest> parse_placement(std::string_view text);
std::string format_placement(const std::vector<std::string>& pod_ids, uint64_t stripe_bytes);
// A file's regions as kRegionsXattr gives them: its size, its stripe, and
// one region per memory pod in stripe order.
struct FileHandover {
  uint64_t size = 0;
  uint64_t stripe_bytes = 0;
  std::vector<std::string> pod_ids;
  std::vector<pods::RegionHandle> regions;  // one per pod_ids entry
};

// "size=BYTES stripe=BYTES regions=POD:ID:TOKEN,...", TOKEN in 32 hex digits.
std::string format_handover(const FileHandover& file);
Result<FileHandover> parse_handover(std::string_view text);
// kAdoptXattr's value: "NAME " and a handover. NAME is one path component.
Result<std::pair<std::string, FileHandover>> parse_adoption(std::string_view text);

// "ID,ID...", as kMemoryPodsXattr and format_placement write them.
std::vector<std::string> split_pod_ids(std::string_view text);

}  // namespace vmpod::cpuserver
