// The compute pod's wire messages: conversions between its types and their
// protobuf-c messages, for its server, its client, and the vmm, which
// carries the same guest descriptions in its own protocol.
#pragma once

#include <string>

#include <vmpod/cpuserver/compute_pod.h>
#include <vmpod/pods/memory_client.h>

#include "compute.pb-c.h"

namespace vmpod::cpuserver {

// Holds the strings a packed GuestSpec message points into.
struct GuestSpecMessage {
  explicit GuestSpecMessage(const GuestSpec& spec);
  GuestSpecMessage(const GuestSpecMessage&) = delete;  // the message points into this
  GuestSpecMessage& operator=(const GuestSpecMessage&) = delete;
  Vmpod__Pods__GuestSpec message = VMPOD__PODS__GUEST_SPEC__INIT;

 private:
  GuestSpec spec_;
  std::string accel_;
};

Result<GuestSpec> guest_spec_from(const Vmpod__Pods__GuestSpec* message);

// Holds what a packed MemoryPlacement message points into.
struct PlacementMessage {
  explicit PlacementMessage(const MemoryPlacement& placement);
  PlacementMessage(const PlacementMessage&) = delete;  // the message points into this
  PlacementMessage& operator=(const PlacementMessage&) = delete;
  Vmpod__Pods__MemoryPlacement message = VMPOD__PODS__MEMORY_PLACEMENT__INIT;

 private:
  std::vector<std::string> pods_;
  std::vector<char*> pod_pointers_;
  std::string provider_;
};

Result<MemoryPlacement> placement_from(const Vmpod__Pods__MemoryPlacement* message);

// Holds what a packed GuestTransfer message points into.
struct TransferMessage {
  explicit TransferMessage(const GuestTransfer& transfer);
  TransferMessage(const TransferMessage&) = delete;  // the message points into this
  TransferMessage& operator=(const TransferMessage&) = delete;
  Vmpod__Pods__GuestTransfer message = VMPOD__PODS__GUEST_TRANSFER__INIT;

 private:
  GuestTransfer transfer_;
  std::vector<Vmpod__Pods__RegionRef> refs_;
  std::vector<Vmpod__Pods__RegionRef*> ref_pointers_;
  std::vector<Vmpod__Pods__ReadExtent> extents_;
  std::vector<Vmpod__Pods__ReadExtent*> extent_pointers_;
};

Result<GuestTransfer> transfer_from(const Vmpod__Pods__GuestTransfer* message);

// Holds the strings a VmRuntime message points into.
struct RuntimeMessage {
  explicit RuntimeMessage(const GuestRuntime& runtime);
  RuntimeMessage(const RuntimeMessage&) = delete;  // the message points into this
  RuntimeMessage& operator=(const RuntimeMessage&) = delete;
  Vmpod__Pods__VmRuntime message = VMPOD__PODS__VM_RUNTIME__INIT;

 private:
  GuestRuntime runtime_;
  std::string state_;
  std::string accel_;
};

std::string pack_runtime(const GuestRuntime& runtime);
Result<GuestRuntime> runtime_from(const Vmpod__Pods__VmRuntime* message);

std::string pack_working_set(const ReadRecording& recording);
Result<ReadRecording> working_set_from(std::string_view body);

std::string pack_stats(const std::string& name, const GuestStats& stats);
Result<GuestStats> stats_from(const Vmpod__Pods__VmStats* message);

}  // namespace vmpod::cpuserver
