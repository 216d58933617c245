// The vmm's wire messages, shared by the vmm's server and its client.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include <vmpod/cpuserver/compute_protocol.h>
#include <vmpod/vmm/vmm.h>

#include "vmm.pb-c.h"

namespace vmpod::vmm {

// Holds everything a PodEntry message points into; never moved.
struct PodEntryMessage {
  explicit PodEntryMessage(const PodRecord& pod);
  PodEntryMessage(const PodEntryMessage&) = delete;
  PodEntryMessage& operator=(const PodEntryMessage&) = delete;
  Vmpod__Pods__PodEntry message = VMPOD__PODS__POD_ENTRY__INIT;

 private:
  PodRecord pod_;
  std::string kind_, control_;
};

Result<PodRecord> pod_from(const Vmpod__Pods__PodEntry* message);
std::string pack_pod_list(const std::vector<PodRecord>& pods);

std::string pack_create_vm(const VmRequest& request);
Result<VmRequest> create_vm_from(std::string_view body);

std::string pack_vm_list(const std::vector<VmRecord>& vms);
std::string pack_migration(const MigrationReport& report);
Result<MigrationReport> migration_from(std::string_view body);
Result<std::vector<VmRecord>> vm_list_from(std::string_view body);

std::string pack_snapshot_list(const std::vector<SnapshotRecord>& snapshots);
Result<std::vector<SnapshotRecord>> snapshot_list_from(std::string_view body);
std::string pack_fork_request(const ForkRequest& request);
Result<ForkRequest> fork_request_from(std::string_view body);

}  // namespace vmpod::vmm
