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

std::string pack_stats(const std::string& name, const GuestStats& stats);
Result<GuestStats> stats_from(const Vmpod__Pods__VmStats* message);

}  // namespace vmpod::cpuserver
