// The x-vmpod-* commands of one VM, answered from the vmm's own calls; the
// VM's endpoint runs them for QMP and for HMP alike.
#pragma once

#include <string>

#include <vmpod/vmm/vmm.h>

#include "vmpod_qapi.h"

namespace vmpod::vmm {

class VmCommands final : public qapi::Commands {
 public:
  // vmm must outlive this.
  VmCommands(Vmm& vmm, std::string vm) : vmm_(vmm), vm_(std::move(vm)) {}

  Result<std::vector<qapi::XVmpodPodInfo>> x_vmpod_query_pods() override;
  Result<std::vector<qapi::XVmpodMemoryTierInfo>> x_vmpod_query_memory() override;
  Result<qapi::XVmpodCacheInfo> x_vmpod_query_cache() override;
  Result<qapi::XVmpodVmInfo> x_vmpod_query_vm() override;
  Status x_vmpod_migrate(const qapi::XVmpodMigrateArguments& arguments) override;
  Result<qapi::XVmpodSnapshotInfo> x_vmpod_snapshot(const qapi::XVmpodSnapshotArguments& arguments) override;
  Result<std::vector<qapi::XVmpodSnapshotInfo>> x_vmpod_query_snapshots() override;
  Status x_vmpod_delete_snapshot(const qapi::XVmpodDeleteSnapshotArguments& arguments) override;
  Result<std::vector<qapi::XVmpodVmInfo>> x_vmpod_fork(const qapi::XVmpodForkArguments& arguments) override;

 private:
  Vmm& vmm_;
  const std::string vm_;
};

qapi::XVmpodVmState schema_vm_state(VmState state);

}  // namespace vmpod::vmm
