// The region and version calls of a memory pod's control socket, without
// the page path: podfs's MemoryPodClient makes them through one of these,
// and so does the vmm, which snapshots and forks regions but never reads a
// page.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>

#include <vmpod/base/result.h>
#include <vmpod/net/socket.h>
#include <vmpod/pods/memory_stats.h>
#include <vmpod/pods/page_protocol.h>
#include <vmpod/pods/protocol.h>

namespace vmpod::pods {

struct RegionHandle {
  uint64_t id = 0;
  RegionToken token{};
};

// A frozen version of a region: whoever holds its token can fork from it,
// describe it and release it; no one can write it.
struct VersionHandle {
  uint64_t id = 0;
  RegionToken token{};
};

struct VersionDescription {
  VersionHandle version;
  uint64_t size = 0;    // the region's size in bytes when it was frozen
  uint64_t pages = 0;   // held by the version's own layer
  uint64_t parent = 0;  // the version its region was frozen or forked from, or 0
};

class RegionControl {
 public:
  // `control` must outlive this.
  RegionControl(net::RpcClient& control, std::chrono::milliseconds timeout)
      : control_(control), timeout_(timeout) {}

  Result<RegionHandle> create_region(uint64_t size, const std::string& owner);
  Status resize_region(const RegionHandle& region, uint64_t size);
  Status delete_region(const RegionHandle& region);
  // Copy-on-write versions. A freeze makes the region's current pages a
  // version; the region's later writes do not change it. A fork is a new
  // region that reads through to a version until it writes.
  Result<VersionDescription> freeze_region(const RegionHandle& region);
  Result<RegionHandle> fork_region(const VersionHandle& version, const std::string& owner);
  Status release_version(const VersionHandle& version);
  Result<VersionDescription> describe_version(const VersionHandle& version);
  // The pod's counters; region_pages sums the pages held by `regions`.
  Result<MemoryPodStats> stats(std::span<const RegionHandle> regions = {});

 private:
  // A call answered with a region, with a version, or with nothing.
  Result<RegionHandle> region_call(MessageType type, const ProtobufCMessage& request);
  Result<VersionDescription> version_call(MessageType type, const ProtobufCMessage& request);
  Status empty_call(MessageType type, const ProtobufCMessage& request);

  net::RpcClient& control_;
  std::chrono::milliseconds timeout_;
};

}  // namespace vmpod::pods
