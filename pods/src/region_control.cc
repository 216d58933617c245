#include <vmpod/pods/region_control.h>

#include <vmpod/pods/rpc.h>

#include "memory.pb-c.h"

namespace vmpod::pods {

namespace {

ProtobufCBinaryData binary(const void* data, size_t size) {
  return ProtobufCBinaryData{size, static_cast<uint8_t*>(const_cast<void*>(data))};
}

Vmpod__Pods__RegionRef region_ref(const RegionHandle& region) {
  Vmpod__Pods__RegionRef ref = VMPOD__PODS__REGION_REF__INIT;
  ref.region_id = region.id;
  ref.token = binary(region.token.data(), region.token.size());
  return ref;
}

Vmpod__Pods__VersionRef version_ref(const VersionHandle& version) {
  Vmpod__Pods__VersionRef ref = VMPOD__PODS__VERSION_REF__INIT;
  ref.version_id = version.id;
  ref.token = binary(version.token.data(), version.token.size());
  return ref;
}

Result<RegionHandle> region_from(const Vmpod__Pods__CreateRegionReply& reply) {
  if (reply.region == nullptr) return fail(ErrorCode::kInternal, "reply without a region");
  auto token = token_from(reply.region->token);
  if (!token) return fail(ErrorCode::kInternal, "malformed region: " + token.error().message());
  return RegionHandle{reply.region->region_id, *token};
}

Result<VersionDescription> version_from(const Vmpod__Pods__VersionReply& reply) {
  if (reply.version == nullptr) return fail(ErrorCode::kInternal, "reply without a version");
  auto token = token_from(reply.version->token);
  if (!token) return fail(ErrorCode::kInternal, "malformed version: " + token.error().message());
  return VersionDescription{{reply.version->version_id, *token}, reply.size, reply.pages,
                            reply.parent};
}

}  // namespace

Result<RegionHandle> RegionControl::region_call(MessageType type, const ProtobufCMessage& request) {
  auto reply = rpc_call<Vmpod__Pods__CreateRegionReply>(
      control_, type, request, vmpod__pods__create_region_reply__descriptor, timeout_);
  if (!reply) return fail(reply.error());
  return region_from(**reply);
}

Result<VersionDescription> RegionControl::version_call(MessageType type,
                                                       const ProtobufCMessage& request) {
  auto reply = rpc_call<Vmpod__Pods__VersionReply>(
      control_, type, request, vmpod__pods__version_reply__descriptor, timeout_);
  if (!reply) return fail(reply.error());
  return version_from(**reply);
}

Status RegionControl::empty_call(MessageType type, const ProtobufCMessage& request) {
  auto reply = rpc_call<Vmpod__Pods__Empty>(control_, type, request, vmpod__pods__empty__descriptor,
                                            timeout_);
  if (!reply) return fail(reply.error());
  return {};
}

Result<RegionHandle> RegionControl::create_region(uint64_t size, const std::string& owner) {
  Vmpod__Pods__CreateRegionRequest request = VMPOD__PODS__CREATE_REGION_REQUEST__INIT;
  request.size = size;
  request.owner = const_cast<char*>(owner.c_str());
  return region_call(MessageType::kMemCreateRegion, request.base);
}

Status RegionControl::resize_region(const RegionHandle& region, uint64_t size) {
  Vmpod__Pods__RegionRef ref = region_ref(region);
  Vmpod__Pods__ResizeRegionRequest request = VMPOD__PODS__RESIZE_REGION_REQUEST__INIT;
  request.region = &ref;
  request.size = size;
  return empty_call(MessageType::kMemResizeRegion, request.base);
}

Status RegionControl::delete_region(const RegionHandle& region) {
  Vmpod__Pods__RegionRef ref = region_ref(region);
  Vmpod__Pods__DeleteRegionRequest request = VMPOD__PODS__DELETE_REGION_REQUEST__INIT;
  request.region = &ref;
  return empty_call(MessageType::kMemDeleteRegion, request.base);
}

Result<VersionDescription> RegionControl::freeze_region(const RegionHandle& region) {
  Vmpod__Pods__RegionRef ref = region_ref(region);
  Vmpod__Pods__FreezeRegionRequest request = VMPOD__PODS__FREEZE_REGION_REQUEST__INIT;
  request.region = &ref;
  return version_call(MessageType::kMemFreezeRegion, request.base);
}

Result<RegionHandle> RegionControl::fork_region(const VersionHandle& version, const std::string& owner) {
  Vmpod__Pods__VersionRef ref = version_ref(version);
  Vmpod__Pods__ForkRegionRequest request = VMPOD__PODS__FORK_REGION_REQUEST__INIT;
  request.version = &ref;
  request.owner = const_cast<char*>(owner.c_str());
  return region_call(MessageType::kMemForkRegion, request.base);
}

Status RegionControl::release_version(const VersionHandle& version) {
  Vmpod__Pods__VersionRef ref = version_ref(version);
  Vmpod__Pods__ReleaseVersionRequest request = VMPOD__PODS__RELEASE_VERSION_REQUEST__INIT;
  request.version = &ref;
  return empty_call(MessageType::kMemReleaseVersion, request.base);
}

Result<VersionDescription> RegionControl::describe_version(const VersionHandle& version) {
  Vmpod__Pods__VersionRef ref = version_ref(version);
  Vmpod__Pods__DescribeVersionRequest request = VMPOD__PODS__DESCRIBE_VERSION_REQUEST__INIT;
  request.version = &ref;
  return version_call(MessageType::kMemDescribeVersion, request.base);
}

Result<MemoryPodStats> RegionControl::stats(std::span<const RegionHandle> regions) {
  std::vector<Vmpod__Pods__RegionRef> refs;
  for (const RegionHandle& region : regions) refs.push_back(region_ref(region));
  std::vector<Vmpod__Pods__RegionRef*> ref_pointers;
  for (auto& ref : refs) ref_pointers.push_back(&ref);
  Vmpod__Pods__MemStatsRequest request = VMPOD__PODS__MEM_STATS_REQUEST__INIT;
  request.n_regions = ref_pointers.size();
  request.regions = ref_pointers.data();
  auto reply = rpc_call<Vmpod__Pods__MemStatsReply>(control_, MessageType::kMemStats, request.base,
                                                    vmpod__pods__mem_stats_reply__descriptor, timeout_);
  if (!reply) return fail(reply.error());
  return memory_pod_stats_from(**reply);
}

}  // namespace vmpod::pods
