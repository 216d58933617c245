#include <vmpod/vmm/vmm.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include <vmpod/base/periodic_task.h>
#include <vmpod/cpuserver/compute_client.h>
#include <vmpod/cpuserver/guest_identity.h>
#include <vmpod/net/message.h>
#include <vmpod/pods/protocol.h>
#include <vmpod/pods/rpc.h>

#include "memory.pb-c.h"
#include "snapshot_store.h"
#include "vm_endpoint.h"
#include "vmm_protocol.h"

namespace vmpod::vmm {

using pods::MessageType;

std::string_view pod_kind_name(PodKind kind) { return kind == PodKind::kMemory ? "memory" : "compute"; }

Result<PodKind> parse_pod_kind(std::string_view name) {
  if (name == "memory") return PodKind::kMemory;
  if (name == "compute") return PodKind::kCompute;
  return fail(ErrorCode::kInvalidArgument, "unknown pod kind '" + std::string(name) + "'");
}

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(3);
constexpr auto kWatchPeriod = std::chrono::milliseconds(300);
constexpr auto kPingTimeout = std::chrono::seconds(2);
// Freezing or forking a region copies no pages, but a large region's page
// table takes a moment.
constexpr auto kRegionCallTimeout = std::chrono::seconds(30);
constexpr unsigned kMaxForkCount = 256;
// Clones of one fork call started at once.
constexpr unsigned kForkParallel = 4;
// The first clone of a snapshot records what it reads for this long: the
// working set its later clones prefetch.
constexpr auto kWorkingSetWindow = std::chrono::seconds(5);

// A pod as the vmm holds it: its record and a live control connection.
struct Pod {
  PodRecord record;
  std::unique_ptr<net::RpcClient> memory;                 // kMemory
  std::unique_ptr<pods::RegionControl> regions;           // kMemory, over `memory`
  std::unique_ptr<cpuserver::ComputePodClient> compute;   // kCompute: the watcher's
  std::mutex call_mutex;  // one call at a time on `memory` or `compute`
  // kCompute: connections for the VMs' calls, one per call in flight, kept
  // once idle. The compute pod serves each connection on a thread of its
  // own, so the VMs on one pod start, stop and move at the same time (a
  // 300 ms clone start no longer waits for another clone's stop); each
  // VM's own actions stay in order through its state machine.
  std::mutex idle_mutex;
  std::vector<std::unique_ptr<cpuserver::ComputePodClient>> idle;
};

// Runs `call` on a connection of its own to the compute pod.
template <class Call>
auto compute_call(Pod& pod, Call call) -> decltype(call(std::declval<cpuserver::ComputePodClient&>())) {
  std::unique_ptr<cpuserver::ComputePodClient> client;
  {
    std::lock_guard lock(pod.idle_mutex);
    if (!pod.idle.empty()) {
      client = std::move(pod.idle.back());
      pod.idle.pop_back();
    }
  }
  if (!client || !client->connected()) {
    auto connected = cpuserver::ComputePodClient::connect(pod.record.control, kConnectTimeout);
    if (!connected) {
      return fail(ErrorCode::kUnavailable, "compute pod " + pod.record.pod_id + " not connected: " +
                                               connected.error().message());
    }
    client = std::move(*connected);
  }
  auto result = call(*client);
  if (client->connected()) {
    std::lock_guard lock(pod.idle_mutex);
    pod.idle.push_back(std::move(client));
  }
  return result;
}

Result<std::string> memory_pod_id(net::RpcClient& rpc) {
  Vmpod__Pods__Empty request = VMPOD__PODS__EMPTY__INIT;
  auto reply = pods::rpc_call<Vmpod__Pods__MemStatsReply>(rpc, MessageType::kMemStats, request.base,
                                                          vmpod__pods__mem_stats_reply__descriptor,
                                                          kPingTimeout);
  if (!reply) return fail(reply.error());
  return std::string((*reply)->pod_id);
}

}  // namespace

struct Vmm::Impl {
  Vmm* owner = nullptr;  // for the VMs' x-vmpod commands, which use its public calls
  VmmConfig config;
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<Pod>> pods;
  std::map<std::string, VmRecord> vms;
  // How each VM was launched, for restart_vm.
  struct Launch {
    std::shared_ptr<Pod> compute;
    cpuserver::GuestSpec guest;
    cpuserver::MemoryPlacement placement;
  };
  std::map<std::string, Launch> launches;
  // A VM's endpoint outlives its QEMUs, until the VM is removed. Shared so
  // that a call using one keeps it while remove_vm takes it out.
  std::map<std::string, std::shared_ptr<VmEndpoint>> endpoints;
  std::vector<std::function<void(const VmEvent&)>> listeners;
  // After `pods`: its destructor releases versions through them.
  std::unique_ptr<SnapshotStore> snapshots;
  std::unique_ptr<net::RpcServer> control;
  PeriodicTask watcher{kWatchPeriod, [this] { watch_once(); }};

  // Moves a VM to a new state through the one transition table; the caller
  // holds `mutex`. Listeners run after the lock is dropped.
  Result<VmEvent> transition(VmRecord& vm, VmState to, std::string reason) {
    VMPOD_TRY_CTX(check_transition(vm.state, to), vm.name);
    VmEvent event{vm.name, vm.state, to, reason};
    vm.state = to;
    vm.reason = std::move(reason);
    return event;
  }

  void publish(const VmEvent& event) {
    spdlog::log(event.to == VmState::kFailed ? spdlog::level::err : spdlog::level::info,
                "vm {}: {} -> {}{}{}", event.vm, vm_state_name(event.from), vm_state_name(event.to),
                event.reason.empty() ? "" : ": ", event.reason);
    std::vector<std::function<void(const VmEvent&)>> copy;
    std::shared_ptr<VmEndpoint> endpoint;
    {
      std::lock_guard lock(mutex);
      copy = listeners;
      auto it = endpoints.find(event.vm);
      if (it != endpoints.end()) endpoint = it->second;
    }
    if (endpoint != nullptr) {
      if (event.to == VmState::kStopped || event.to == VmState::kFailed) endpoint->detach(event.reason);
      endpoint->state_changed(event.to, event.reason);
    }
    for (auto& listener : copy) listener(event);
  }

  // The VM's endpoint, made on its first start.
  Result<std::shared_ptr<VmEndpoint>> endpoint_for(const std::string& name, const std::string& qmp_tcp) {
    std::lock_guard lock(mutex);
    auto it = endpoints.find(name);
    if (it != endpoints.end()) return it->second;
    std::error_code ec;
    std::filesystem::create_directories(config.run_dir, ec);
    if (ec) return fail(ErrorCode::kInternal, "cannot create " + config.run_dir + ": " + ec.message());
    const std::string base = config.run_dir + "/" + name;
    VmEndpoint::Addresses addresses{{net::SocketAddress::Kind::kUnix, base + ".qmp", "", 0},
                                    {net::SocketAddress::Kind::kUnix, base + ".hmp", "", 0},
                                    std::nullopt};
    if (!qmp_tcp.empty()) {
      auto tcp = net::parse_socket_address("tcp:" + qmp_tcp);
      if (!tcp) return fail(tcp.error().context("qmp tcp address"));
      addresses.qmp_tcp = *tcp;
    }
    auto endpoint = VmEndpoint::start(name, addresses, std::make_unique<VmCommands>(*owner, name),
                                      [this, name](const std::string& event) { follow_qemu(name, event); });
    if (!endpoint) return fail(endpoint.error());
    std::shared_ptr<VmEndpoint> shared = std::move(*endpoint);
    endpoints.emplace(name, shared);
    return shared;
  }

  // Launches the VM on its compute pod (booting it, or from `incoming`
  // device state and regions) and attaches its endpoint; the VM is
  // starting, and ends running (paused if `incoming` says so) or failed.
  Result<VmRecord> launch(const std::string& name, VmEndpoint& endpoint, const Launch& launch,
                          const cpuserver::GuestTransfer* incoming = nullptr) {
    auto runtime = compute_call(*launch.compute, [&](cpuserver::ComputePodClient& pod) {
      return incoming ? pod.receive_guest(launch.guest, launch.placement, *incoming)
                      : pod.launch(launch.guest, launch.placement);
    });
    if (!runtime) {
      move(name, VmState::kFailed, runtime.error().message());
      return fail(runtime.error().context("vm " + name));
    }
    {
      std::lock_guard lock(mutex);
      vms[name].runtime = *runtime;
    }
    endpoint.attach(*runtime, launch.compute->record.pod_id);
    move(name, incoming && !incoming->running ? VmState::kPaused : VmState::kRunning, "");
    return vm(name);
  }

  // Starts an action: moves the VM to `to` if the table allows it from the
  // state it is in, checked and changed under one lock so that two actions
  // can not both start; returns the VM as it was.
  Result<VmRecord> begin(const std::string& name, VmState to, std::string reason) {
    VmRecord before;
    std::optional<VmEvent> event;
    {
      std::lock_guard lock(mutex);
      auto it = vms.find(name);
      if (it == vms.end()) return fail(ErrorCode::kNotFound, "no vm named '" + name + "'");
      before = it->second;
      auto moved = transition(it->second, to, std::move(reason));
      if (!moved) return fail(moved.error());
      event = *moved;
    }
    publish(*event);
    return before;
  }

  // Changes state if allowed and publishes; a disallowed change (the VM
  // moved on meanwhile) is dropped quietly.
  void move(const std::string& name, VmState to, std::string reason) {
    std::optional<VmEvent> event;
    {
      std::lock_guard lock(mutex);
      auto it = vms.find(name);
      if (it == vms.end() || it->second.state == to) return;
      auto moved = transition(it->second, to, std::move(reason));
      if (moved) event = *moved;
    }
    if (event) publish(*event);
  }

  // QEMU's vCPUs stopped or resumed (a monitor's stop or cont, a guest
  // error policy): the VM is paused or running. Only between those two, so
  // an old QEMU's last events cannot move a VM that is starting anew.
  void follow_qemu(const std::string& name, const std::string& event) {
    const bool stop = event == "STOP";
    if (!stop && event != "RESUME") return;
    std::optional<VmEvent> moved;
    {
      std::lock_guard lock(mutex);
      auto it = vms.find(name);
      if (it == vms.end() || it->second.state != (stop ? VmState::kRunning : VmState::kPaused)) return;
      auto changed = transition(it->second, stop ? VmState::kPaused : VmState::kRunning, "QEMU event " + event);
      if (changed) moved = *changed;
    }
    if (moved) publish(*moved);
  }

  Status connect_pod(Pod& pod) {
    if (pod.record.kind == PodKind::kMemory) {
      auto rpc = net::RpcClient::connect(pod.record.control, kConnectTimeout);
      if (!rpc) return fail(rpc.error());
      auto id = memory_pod_id(**rpc);
      if (!id) return fail(id.error());
      if (pod.record.pod_id.empty()) pod.record.pod_id = *id;
      pod.memory = std::move(*rpc);
      pod.regions = std::make_unique<pods::RegionControl>(*pod.memory, kRegionCallTimeout);
    } else {
      auto client = cpuserver::ComputePodClient::connect(pod.record.control, kConnectTimeout);
      if (!client) return fail(client.error());
      auto status = (*client)->status();
      if (!status) return fail(status.error());
      if (pod.record.pod_id.empty()) pod.record.pod_id = status->pod_id;
      pod.compute = std::move(*client);
    }
    return {};
  }

  Result<PodRecord> register_pod(const PodRecord& record) {
    auto pod = std::make_shared<Pod>();
    pod->record = record;
    pod->record.pod_id.clear();
    VMPOD_TRY_CTX(connect_pod(*pod), "pod " + record.control.to_string());
    pod->record.healthy = true;
    std::lock_guard lock(mutex);
    if (pods.count(pod->record.pod_id)) {
      return fail(ErrorCode::kAlreadyExists, "pod '" + pod->record.pod_id + "' is registered");
    }
    pods[pod->record.pod_id] = pod;
    spdlog::info("vmm: {} pod {} at {}", pod_kind_name(record.kind), pod->record.pod_id,
                 record.control.to_string());
    return pod->record;
  }

  std::vector<PodRecord> pod_records() const {
    std::lock_guard lock(mutex);
    std::vector<PodRecord> out;
    for (const auto& [id, pod] : pods) out.push_back(pod->record);
    return out;
  }

  // How many live VMs use each pod: placement spreads load by this count.
  std::map<std::string, unsigned> pod_load() const {
    std::map<std::string, unsigned> load;
    for (const auto& [id, pod] : pods) load[id] = 0;
    for (const auto& [name, vm] : vms) {
      if (vm.state == VmState::kStopped || vm.state == VmState::kFailed) continue;
      ++load[vm.compute_pod];
      for (const auto& pod : vm.memory_pods) ++load[pod];
    }
    return load;
  }

  // Healthy pods of one kind, least loaded first; the caller holds `mutex`.
  std::vector<std::shared_ptr<Pod>> by_load(PodKind kind) const {
    auto load = pod_load();
    std::vector<std::shared_ptr<Pod>> out;
    for (const auto& [id, pod] : pods) {
      if (pod->record.healthy && pod->record.kind == kind) out.push_back(pod);
    }
    std::stable_sort(out.begin(), out.end(),
                     [&](const auto& a, const auto& b) { return load[a->record.pod_id] < load[b->record.pod_id]; });
    return out;
  }

  // The compute pod asked for, or the least loaded; the caller holds `mutex`.
  Result<std::shared_ptr<Pod>> choose_compute(const std::string& wanted) const {
    auto compute = by_load(PodKind::kCompute);
    if (!wanted.empty()) {
      auto it = std::find_if(compute.begin(), compute.end(),
                             [&](const auto& pod) { return pod->record.pod_id == wanted; });
      if (it == compute.end()) return fail(ErrorCode::kNotFound, "no healthy compute pod '" + wanted + "'");
      return *it;
    }
    if (compute.empty()) return fail(ErrorCode::kUnavailable, "no healthy compute pod");
    return compute.front();
  }

  Result<std::vector<std::shared_ptr<Pod>>> place(const VmRequest& request) {
    auto compute = choose_compute(request.compute_pod);
    if (!compute) return fail(compute.error());
    auto memory = by_load(PodKind::kMemory);
    size_t wanted = request.memory_pod_count == 0 ? memory.size() : request.memory_pod_count;
    if (memory.empty() || memory.size() < wanted) {
      return fail(ErrorCode::kUnavailable, "wanted " + std::to_string(wanted) +
                                               " memory pods, " + std::to_string(memory.size()) +
                                               " healthy");
    }
    memory.resize(wanted);
    // Stripe order follows the pod ids, so a placement reads the same in `ls`.
    std::sort(memory.begin(), memory.end(),
              [](const auto& a, const auto& b) { return a->record.pod_id < b->record.pod_id; });
    std::vector<std::shared_ptr<Pod>> chosen = {*compute};
    chosen.insert(chosen.end(), memory.begin(), memory.end());
    return chosen;
  }

  // A name a new VM may take: unused, or a VM that ended; the caller holds `mutex`.
  Status check_name_free(const std::string& name) const {
    auto existing = vms.find(name);
    if (existing != vms.end() && existing->second.state != VmState::kStopped &&
        existing->second.state != VmState::kFailed) {
      return fail(ErrorCode::kAlreadyExists,
                  "vm '" + name + "' is " + std::string(vm_state_name(existing->second.state)));
    }
    return {};
  }

  // Enters a new VM as starting; the caller holds `mutex` and publishes
  // the event it returns.
  Result<VmEvent> add_vm(VmRecord vm) {
    auto moved = transition(vm, VmState::kStarting, "");
    if (!moved) return fail(moved.error());
    vms[vm.name] = std::move(vm);
    return *moved;
  }

  // Gives a starting VM its endpoint and remembers how it launches; on
  // failure the VM has failed.
  Result<std::shared_ptr<VmEndpoint>> open_vm(const std::string& name, const std::string& qmp_tcp, const Launch& how) {
    auto endpoint = endpoint_for(name, qmp_tcp);
    if (!endpoint) {
      move(name, VmState::kFailed, endpoint.error().message());
      return fail(endpoint.error().context("vm " + name));
    }
    std::lock_guard lock(mutex);
    VmRecord& record = vms[name];
    record.qmp_endpoint = (*endpoint)->address().path;
    record.hmp_endpoint = (*endpoint)->hmp_address().path;
    auto tcp = (*endpoint)->tcp_address();
    record.qmp_tcp_endpoint = tcp ? tcp->to_string() : std::string();
    launches[name] = how;
    return *endpoint;
  }

  Result<VmRecord> create_vm(const VmRequest& request) {
    const std::string& name = request.guest.name;
    Launch how{nullptr, request.guest, {}};
    std::optional<VmEvent> starting;
    {
      std::lock_guard lock(mutex);
      if (auto free = check_name_free(name); !free) return fail(free.error());
      auto chosen = place(request);
      if (!chosen) return fail(chosen.error().context("vm " + name));
      how.compute = chosen->front();
      VmRecord vm;
      vm.name = name;
      vm.guest = how.guest;
      vm.compute_pod = how.compute->record.pod_id;
      for (size_t i = 1; i < chosen->size(); ++i) {
        vm.memory_pods.push_back((*chosen)[i]->record.pod_id);
        how.placement.memory_pods.push_back((*chosen)[i]->record.control);
      }
      auto added = add_vm(std::move(vm));
      if (!added) return fail(added.error());
      starting = *added;
    }
    publish(*starting);
    how.placement.fabric.provider = request.provider;
    how.placement.stripe_bytes = request.stripe_bytes;
    how.placement.local_cache_bytes = request.local_cache_bytes;
    auto endpoint = open_vm(name, request.qmp_tcp, how);
    if (!endpoint) return fail(endpoint.error());
    return launch(name, **endpoint, how);
  }

  Result<VmRecord> restart_vm(const std::string& name) {
    Launch how;
    std::shared_ptr<VmEndpoint> endpoint;
    {
      std::lock_guard lock(mutex);
      auto it = launches.find(name);
      if (it == launches.end()) return fail(ErrorCode::kNotFound, "no vm named '" + name + "'");
      how = it->second;
      endpoint = endpoints.at(name);
    }
    // Starting first, so the watcher does not take the old QEMU's end for the VM's.
    auto current = begin(name, VmState::kStarting, "restart");
    if (!current) return fail(current.error().context("restart"));
    Status stopped = compute_call(*how.compute, [&](cpuserver::ComputePodClient& pod) -> Status {
      auto done = pod.stop(name);
      if (!done && done.error().code() != ErrorCode::kNotFound) return fail(done.error());
      return {};
    });
    if (!stopped) {
      move(name, VmState::kFailed, "restart: " + stopped.error().message());
      return fail(stopped.error().context("restart"));
    }
    return launch(name, *endpoint, how);
  }

  Result<MigrationReport> migrate_vm(const std::string& name, const std::string& to) {
    const auto started = std::chrono::steady_clock::now();
    Launch how;
    std::shared_ptr<VmEndpoint> endpoint;
    std::shared_ptr<Pod> destination;
    {
      std::lock_guard lock(mutex);
      auto it = launches.find(name);
      if (it == launches.end()) return fail(ErrorCode::kNotFound, "no vm named '" + name + "'");
      how = it->second;
      endpoint = endpoints.at(name);
      auto pod = pods.find(to);
      if (pod == pods.end() || pod->second->record.kind != PodKind::kCompute) {
        return fail(ErrorCode::kNotFound, "no compute pod named '" + to + "'");
      }
      destination = pod->second;
      if (!destination->record.healthy) {
        return fail(ErrorCode::kUnavailable, "compute pod " + to + " is not healthy: " + destination->record.reason);
      }
    }
    if (destination == how.compute) return fail(ErrorCode::kInvalidArgument, "vm " + name + " already runs on " + to);
    auto current = begin(name, VmState::kMigrating, "to " + to);
    if (!current) return fail(current.error().context("migrate " + name));
    const VmState resume_as = current->state;
    const std::string source_id = how.compute->record.pod_id;

    const auto paused = std::chrono::steady_clock::now();
    auto transfer = compute_call(*how.compute, [&](cpuserver::ComputePodClient& pod) { return pod.send_guest(name); });
    if (!transfer) {
      move(name, resume_as, "migration to " + to + " failed: " + transfer.error().message());
      return fail(transfer.error().context("migrate " + name + " from " + source_id));
    }
    auto runtime = compute_call(*destination, [&](cpuserver::ComputePodClient& pod) {
      return pod.receive_guest(how.guest, how.placement, *transfer);
    });
    if (!runtime) {
      // The guest goes on where it was.
      Status resumed = compute_call(*how.compute, [&](cpuserver::ComputePodClient& pod) { return pod.cancel_send(name); });
      if (!resumed) spdlog::error("vm {}: resuming on {}: {}", name, source_id, resumed.error().to_string());
      move(name, resume_as, "migration to " + to + " failed: " + runtime.error().message());
      return fail(runtime.error().context("migrate " + name + " to " + to));
    }
    const auto resumed = std::chrono::steady_clock::now();
    {
      // From here the destination is the VM's: the source's end of it is
      // not the VM's end.
      std::lock_guard lock(mutex);
      vms[name].compute_pod = to;
      vms[name].runtime = *runtime;
      launches[name].compute = destination;
    }
    endpoint->attach(*runtime, to);
    Status finished = compute_call(*how.compute, [&](cpuserver::ComputePodClient& pod) { return pod.finish_send(name); });
    if (!finished) spdlog::error("vm {}: ending its QEMU on {}: {}", name, source_id, finished.error().to_string());
    move(name, resume_as, "migrated from " + source_id);
    auto moved = vm(name);
    if (!moved) return fail(moved.error());
    MigrationReport report{*moved, std::chrono::duration_cast<std::chrono::microseconds>(resumed - paused),
                           std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                                 started)};
    spdlog::info("vm {}: moved from {} to {}: downtime {} ms, total {} ms", name, source_id, to,
                 report.downtime.count() / 1000, report.total.count() / 1000);
    return report;
  }

  // One control call at a time per memory pod, as for compute pods.
  Status memory_call(const std::string& pod_id, const std::function<Status(pods::RegionControl&)>& call) {
    std::shared_ptr<Pod> pod;
    {
      std::lock_guard lock(mutex);
      auto it = pods.find(pod_id);
      if (it == pods.end() || it->second->record.kind != PodKind::kMemory) {
        return fail(ErrorCode::kNotFound, "no memory pod named '" + pod_id + "'");
      }
      pod = it->second;
    }
    std::lock_guard call_lock(pod->call_mutex);
    if (!pod->regions || !pod->memory->connected()) {
      return fail(ErrorCode::kUnavailable, "memory pod " + pod_id + " not connected");
    }
    return call(*pod->regions);
  }

  Result<SnapshotRecord> snapshot_vm(const std::string& name, const std::string& snapshot, bool stay_paused) {
    VMPOD_TRY_CTX(snapshots->check_new_name(snapshot), "snapshot");
    auto current = begin(name, VmState::kSnapshotting, snapshot);
    if (!current) return fail(current.error().context("snapshot " + name));
    const VmState resume_as = current->state;
    // Read once snapshotting: no migration can move the VM meanwhile, and
    // every VM that can snapshot (running or paused) was launched.
    Launch how;
    {
      std::lock_guard lock(mutex);
      auto it = launches.find(name);
      if (it != launches.end()) how = it->second;
    }
    if (!how.compute) {
      move(name, resume_as, "snapshot " + snapshot + " failed: never launched");
      return fail(ErrorCode::kInternal, "snapshot " + name + ": the vm was never launched");
    }
    auto sent = compute_call(*how.compute, [&](cpuserver::ComputePodClient& pod) { return pod.send_guest(name); });
    if (!sent) {
      move(name, resume_as, "snapshot " + snapshot + " failed: " + sent.error().message());
      return fail(sent.error().context("snapshot " + name));
    }
    SnapshotRecord record;
    record.name = snapshot;
    record.vm = name;
    record.parent = current->snapshot;
    record.memory_pods = current->memory_pods;
    record.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch()).count();
    auto taken = snapshots->take(record, how.guest, how.placement, *sent);
    // The guest runs on where it was (QEMU resumes only if it was running).
    Status resumed = stay_paused ? Status{}
                                 : compute_call(*how.compute,
                                                [&](cpuserver::ComputePodClient& pod) { return pod.cancel_send(name); });
    std::string reason = taken ? "snapshot " + snapshot : "snapshot " + snapshot + " failed: " + taken.error().message();
    if (!resumed) {
      spdlog::error("vm {}: resuming after snapshot {}: {}", name, snapshot, resumed.error().to_string());
      reason += "; not resumed: " + resumed.error().message();
    }
    move(name, stay_paused || !resumed ? VmState::kPaused : resume_as, reason);
    if (!taken) return fail(taken.error());
    spdlog::info("vm {}: snapshot {}: {} bytes of device state, {} pages frozen", name, snapshot,
                 taken->device_state_bytes, taken->pages);
    return *taken;
  }

  std::vector<SnapshotRecord> snapshot_list() const {
    auto list = snapshots->list();
    std::lock_guard lock(mutex);
    for (SnapshotRecord& record : list) {
      record.clones = static_cast<unsigned>(std::count_if(vms.begin(), vms.end(), [&](const auto& entry) {
        const VmRecord& vm = entry.second;
        return vm.snapshot == record.name && vm_is_live(vm.state);
      }));
    }
    return list;
  }

  Result<SnapshotRecord> snapshot_record(const std::string& name) const {
    for (SnapshotRecord& record : snapshot_list()) {
      if (record.name == name) return record;
    }
    return fail(ErrorCode::kNotFound, "no snapshot named '" + name + "'");
  }

  Result<std::vector<VmRecord>> fork_snapshot(const ForkRequest& request) {
    auto snapshot = snapshots->find(request.snapshot);
    if (!snapshot) return fail(snapshot.error());
    if (request.count == 0 || request.count > kMaxForkCount) {
      return fail(ErrorCode::kInvalidArgument, "fork: count must be 1 to " + std::to_string(kMaxForkCount));
    }
    if (!request.code_disk.empty() && snapshot->guest.code_disk.empty()) {
      return fail(ErrorCode::kInvalidArgument, "fork: snapshot " + request.snapshot +
                                                   " has no code disk to replace (its VM was made without one)");
    }
    const std::string prefix = request.name_prefix.empty() ? request.snapshot : request.name_prefix;
    // Several clones start at once: a clone's start is mostly QEMU's own
    // (process, machine, device state), on the compute pod's cores.
    std::vector<std::optional<Result<VmRecord>>> forked(request.count);
    std::atomic<unsigned> next{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> starters;
    for (unsigned t = 0; t < std::min(request.count, kForkParallel); ++t) {
      starters.emplace_back([&] {
        for (unsigned i = next++; i < request.count && !failed; i = next++) {
          forked[i] = fork_one(*snapshot, prefix, request);
          if (!*forked[i]) failed = true;
        }
      });
    }
    for (auto& starter : starters) starter.join();
    std::vector<VmRecord> clones;
    std::optional<Error> error;
    for (auto& clone : forked) {
      if (!clone) continue;  // not started after a failure
      if (*clone) clones.push_back(**clone);
      else if (!error) error = clone->error();
    }
    // In name order, PREFIX-2 before PREFIX-10, as one at a time gave them.
    std::sort(clones.begin(), clones.end(), [](const VmRecord& a, const VmRecord& b) {
      return a.name.size() != b.name.size() ? a.name.size() < b.name.size() : a.name < b.name;
    });
    if (error) {
      std::string started;
      for (const VmRecord& vm : clones) started += (started.empty() ? "" : ", ") + vm.name;
      return fail(clones.empty() ? *error : error->context("clones started: " + started));
    }
    return clones;
  }

  // The lowest PREFIX-N that names no live VM; the caller holds `mutex`.
  std::string free_clone_name(const std::string& prefix) const {
    for (unsigned n = 0;; ++n) {
      std::string name = prefix + "-" + std::to_string(n);
      if (check_name_free(name)) return name;
    }
  }

  Result<VmRecord> fork_one(const Snapshot& snapshot, const std::string& prefix, const ForkRequest& request) {
    Launch how{nullptr, snapshot.guest, snapshot.placement};
    std::optional<VmEvent> starting;
    {
      std::lock_guard lock(mutex);
      for (const std::string& pod_id : snapshot.record.memory_pods) {
        auto pod = pods.find(pod_id);
        if (pod == pods.end() || !pod->second->record.healthy) {
          return fail(ErrorCode::kUnavailable, "fork: memory pod " + pod_id + " of snapshot " + snapshot.record.name +
                                                   " is not healthy");
        }
      }
      auto compute = choose_compute(request.compute_pod);
      if (!compute) return fail(compute.error().context("fork"));
      how.compute = *compute;
      how.guest.name = free_clone_name(prefix);
      // Clones of one snapshot would otherwise share its RNG state (until
      // the guest reseeds) and its MAC.
      if (!how.guest.generation_id.empty()) how.guest.generation_id = cpuserver::new_generation_id();
      if (!how.guest.mac.empty()) how.guest.mac = cpuserver::new_mac();
      if (!request.code_disk.empty()) how.guest.code_disk = request.code_disk;
      VmRecord vm;
      vm.name = how.guest.name;
      vm.guest = how.guest;
      vm.compute_pod = how.compute->record.pod_id;
      vm.memory_pods = snapshot.record.memory_pods;
      vm.snapshot = snapshot.record.name;
      auto added = add_vm(std::move(vm));
      if (!added) return fail(added.error());
      starting = *added;
    }
    const std::string& name = how.guest.name;
    publish(*starting);
    auto endpoint = open_vm(name, "", how);
    if (!endpoint) return fail(endpoint.error());
    auto transfer = snapshots->fork(snapshot, "vmm/" + name, !request.paused);
    if (!transfer) {
      move(name, VmState::kFailed, transfer.error().message());
      return fail(transfer.error().context("vm " + name));
    }
    auto working_set = working_set_of(snapshot);
    if (working_set && request.prefetch) transfer->prefetch = *working_set;
    if (!working_set && snapshot.recorder.empty()) {
      transfer->record_reads = kWorkingSetWindow;
      snapshots->set_recorder(snapshot.record.name, name);
    }
    auto clone = launch(name, **endpoint, how, &*transfer);
    // A compute pod that could not start the clone left its regions alone.
    if (!clone) snapshots->delete_regions(snapshot, transfer->ram);
    return clone;
  }

  Status delete_snapshot(const std::string& name) { return snapshots->remove(name); }

  // The snapshot's working set, asked of the clone that records it once its
  // window is over; none while it records or when no clone has. A recorder
  // that can no longer answer is forgotten, so that the next clone records.
  std::optional<std::vector<cpuserver::ReadExtent>> working_set_of(const Snapshot& snapshot) {
    if (snapshot.working_set) return snapshot.working_set;
    if (snapshot.recorder.empty()) return std::nullopt;
    auto recording = on_compute(snapshot.recorder, [&](cpuserver::ComputePodClient& pod) {
      return pod.working_set(snapshot.recorder);
    });
    if (!recording) {
      spdlog::warn("snapshot {}: no working set from {}: {}", snapshot.record.name, snapshot.recorder,
                   recording.error().to_string());
      snapshots->set_working_set(snapshot.record.name, std::nullopt);
      return std::nullopt;
    }
    if (!recording->done) return std::nullopt;
    snapshots->set_working_set(snapshot.record.name, recording->extents);
    return recording->extents;
  }

  Result<VmRecord> vm(const std::string& name) const {
    std::lock_guard lock(mutex);
    auto it = vms.find(name);
    if (it == vms.end()) return fail(ErrorCode::kNotFound, "no vm named '" + name + "'");
    return it->second;
  }

  Result<std::shared_ptr<Pod>> compute_of(const std::string& name) {
    std::lock_guard lock(mutex);
    auto it = vms.find(name);
    if (it == vms.end()) return fail(ErrorCode::kNotFound, "no vm named '" + name + "'");
    auto pod = pods.find(it->second.compute_pod);
    if (pod == pods.end()) return fail(ErrorCode::kUnavailable, "compute pod of '" + name + "' is gone");
    return pod->second;
  }

  Status stop_vm(const std::string& name) {
    auto current = vm(name);
    if (!current) return fail(current.error());
    if (current->state == VmState::kStopped) return {};
    VMPOD_TRY_CTX(check_transition(current->state, VmState::kStopped), "stop");
    auto compute = compute_of(name);
    if (compute) {
      auto stopped = compute_call(**compute, [&](cpuserver::ComputePodClient& pod) { return pod.stop(name); });
      if (!stopped && stopped.error().code() != ErrorCode::kNotFound) return fail(stopped.error());
    }
    move(name, VmState::kStopped, current->state == VmState::kFailed ? current->reason : "stopped on request");
    return {};
  }

  // Forgets a VM that no QEMU runs for: its endpoint closes (its clients
  // are disconnected, its sockets and threads go) and its name and record
  // with it. A snapshot whose working set it recorded asks it for the set
  // first, so that later clones still prefetch.
  Status remove_vm(const std::string& name) {
    auto current = vm(name);
    if (!current) return fail(current.error());
    if (vm_is_live(current->state)) {
      return fail(ErrorCode::kWrongState,
                  "vm '" + name + "' is " + std::string(vm_state_name(current->state)) + ": stop it first");
    }
    for (const SnapshotRecord& record : snapshots->list()) {
      auto snapshot = snapshots->find(record.name);
      if (snapshot && snapshot->recorder == name) (void)working_set_of(*snapshot);
    }
    std::shared_ptr<VmEndpoint> endpoint;
    {
      std::lock_guard lock(mutex);
      auto it = vms.find(name);
      // Checked again: the name may have started a new VM meanwhile.
      if (it == vms.end()) return {};
      if (vm_is_live(it->second.state)) {
        return fail(ErrorCode::kWrongState, "vm '" + name + "' started again");
      }
      vms.erase(it);
      launches.erase(name);
      auto found = endpoints.find(name);
      if (found != endpoints.end()) {
        endpoint = std::move(found->second);
        endpoints.erase(found);
      }
    }
    // A call that took the endpoint before it went (publishing an event,
    // a restart that will find no VM) lets go of it in a moment; the last
    // reference goes here, never on the endpoint's own worker, which its
    // destructor joins.
    while (endpoint && endpoint.use_count() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    endpoint.reset();
    spdlog::info("vm {}: removed", name);
    return {};
  }

  template <class Call>
  auto on_compute(const std::string& name, Call call) -> decltype(call(std::declval<cpuserver::ComputePodClient&>())) {
    auto compute = compute_of(name);
    if (!compute) return fail(compute.error());
    return compute_call(**compute, call);
  }

  // One round of health checks: each pod answers or is marked lost, and the
  // VMs that depend on a lost pod, or that their compute pod reports ended,
  // change state with the reason.
  void watch_once() {
    std::vector<std::shared_ptr<Pod>> all;
    {
      std::lock_guard lock(mutex);
      for (const auto& [id, pod] : pods) all.push_back(pod);
    }
    for (const auto& pod : all) {
      std::lock_guard call(pod->call_mutex);
      Status health;
      std::vector<cpuserver::GuestRuntime> guests;
      bool connected = pod->record.kind == PodKind::kMemory ? pod->memory && pod->memory->connected()
                                                            : pod->compute && pod->compute->connected();
      if (!connected) health = connect_pod(*pod);
      if (health && pod->record.kind == PodKind::kMemory) {
        auto id = memory_pod_id(*pod->memory);
        if (!id) health = fail(id.error());
      } else if (health) {
        auto status = pod->compute->status();
        if (!status) health = fail(status.error());
        else guests = status->guests;
      }
      update_pod(*pod, health, guests);
    }
  }

  void update_pod(Pod& pod, const Status& health, const std::vector<cpuserver::GuestRuntime>& guests) {
    std::vector<std::pair<std::string, std::pair<VmState, std::string>>> changes;
    {
      std::lock_guard lock(mutex);
      bool was_healthy = pod.record.healthy;
      pod.record.healthy = static_cast<bool>(health);
      pod.record.reason = health ? "" : health.error().message();
      if (was_healthy && !health) {
        spdlog::error("vmm: {} pod {} lost: {}", pod_kind_name(pod.record.kind), pod.record.pod_id,
                      pod.record.reason);
      }
      for (auto& [name, vm] : vms) {
        bool live = vm.state != VmState::kStopped && vm.state != VmState::kFailed &&
                    vm.state != VmState::kDefined && vm.state != VmState::kStarting;
        if (!live) continue;
        bool uses = vm.compute_pod == pod.record.pod_id ||
                    std::count(vm.memory_pods.begin(), vm.memory_pods.end(), pod.record.pod_id);
        if (!uses) continue;
        if (!health) {
          changes.push_back({name, {VmState::kFailed, std::string(pod_kind_name(pod.record.kind)) +
                                                          " pod " + pod.record.pod_id + " lost: " +
                                                          pod.record.reason}});
          continue;
        }
        if (pod.record.kind != PodKind::kCompute) continue;
        for (const auto& guest : guests) {
          if (guest.name != name) continue;
          if (guest.state == cpuserver::GuestState::kFailed) {
            changes.push_back({name, {VmState::kFailed, guest.reason}});
          } else if (guest.state == cpuserver::GuestState::kStopped) {
            changes.push_back({name, {VmState::kStopped, guest.reason}});
          }
        }
      }
    }
    for (auto& [name, change] : changes) move(name, change.first, change.second);
  }

  std::vector<VmRecord> all_vms() const {
    std::lock_guard lock(mutex);
    std::vector<VmRecord> out;
    for (const auto& [name, vm] : vms) out.push_back(vm);
    return out;
  }

  Result<std::string> named(const net::Frame& frame, std::string& name) {
    auto request = net::unpack<Vmpod__Pods__VmName>(vmpod__pods__vm_name__descriptor, frame.body);
    if (!request) return fail(request.error());
    name = (*request)->name;
    return std::string();
  }

  Result<std::string> handle(const net::Frame& frame) {
    std::string name;
    switch (static_cast<MessageType>(frame.type)) {
      case MessageType::kVmmRegisterPod: {
        auto request = net::unpack<Vmpod__Pods__RegisterPodRequest>(
            vmpod__pods__register_pod_request__descriptor, frame.body);
        if (!request) return fail(request.error());
        auto pod = pod_from((*request)->pod);
        if (!pod) return fail(pod.error());
        auto registered = register_pod(*pod);
        if (!registered) return fail(registered.error());
        return pack_pod_list({*registered});
      }
      case MessageType::kVmmListPods: return pack_pod_list(pod_records());
      case MessageType::kVmmCreateVm: {
        auto request = create_vm_from(frame.body);
        if (!request) return fail(request.error());
        auto created = create_vm(*request);
        if (!created) return fail(created.error());
        return pack_vm_list({*created});
      }
      case MessageType::kVmmListVms: return pack_vm_list(all_vms());
      case MessageType::kVmmStopVm: {
        auto parsed = named(frame, name);
        if (!parsed) return parsed;
        auto stopped = stop_vm(name);
        if (!stopped) return fail(stopped.error());
        return pods::empty_message();
      }
      case MessageType::kVmmRemoveVm: {
        auto parsed = named(frame, name);
        if (!parsed) return parsed;
        auto removed = remove_vm(name);
        if (!removed) return fail(removed.error());
        return pods::empty_message();
      }
      case MessageType::kVmmRestartVm: {
        auto parsed = named(frame, name);
        if (!parsed) return parsed;
        auto restarted = restart_vm(name);
        if (!restarted) return fail(restarted.error());
        return pack_vm_list({*restarted});
      }
      case MessageType::kVmmMigrateVm: {
        auto request = net::unpack<Vmpod__Pods__MigrateVmRequest>(vmpod__pods__migrate_vm_request__descriptor,
                                                                   frame.body);
        if (!request) return fail(request.error());
        auto migrated = migrate_vm((*request)->name, (*request)->to);
        if (!migrated) return fail(migrated.error());
        return pack_migration(*migrated);
      }
      case MessageType::kVmmSnapshotVm: {
        auto request = net::unpack<Vmpod__Pods__SnapshotVmRequest>(vmpod__pods__snapshot_vm_request__descriptor,
                                                                    frame.body);
        if (!request) return fail(request.error());
        auto taken = snapshot_vm((*request)->vm, (*request)->snapshot, (*request)->paused);
        if (!taken) return fail(taken.error());
        return pack_snapshot_list({*taken});
      }
      case MessageType::kVmmForkSnapshot: {
        auto request = fork_request_from(frame.body);
        if (!request) return fail(request.error());
        auto clones = fork_snapshot(*request);
        if (!clones) return fail(clones.error());
        return pack_vm_list(*clones);
      }
      case MessageType::kVmmListSnapshots: return pack_snapshot_list(snapshot_list());
      case MessageType::kVmmDeleteSnapshot: {
        auto parsed = named(frame, name);
        if (!parsed) return parsed;
        auto deleted = delete_snapshot(name);
        if (!deleted) return fail(deleted.error());
        return pods::empty_message();
      }
      case MessageType::kVmmDropCache: {
        auto parsed = named(frame, name);
        if (!parsed) return parsed;
        auto dropped = on_compute(name, [&](auto& pod) { return pod.drop_cache(name); });
        if (!dropped) return fail(dropped.error());
        return pods::empty_message();
      }
      case MessageType::kVmmVmStats: {
        auto parsed = named(frame, name);
        if (!parsed) return parsed;
        auto stats = on_compute(name, [&](auto& pod) { return pod.stats(name); });
        if (!stats) return fail(stats.error());
        return cpuserver::pack_stats(name, *stats);
      }
      default:
        return fail(ErrorCode::kInvalidArgument, "unknown message type " + std::to_string(frame.type));
    }
  }
};

Vmm::Vmm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { impl_->owner = this; }

Result<std::unique_ptr<Vmm>> Vmm::start(const VmmConfig& config) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  for (const auto& pod : config.pods) {
    auto registered = impl->register_pod(pod);
    if (!registered) return fail(registered.error().context("vmm"));
  }
  Impl* raw = impl.get();
  impl->snapshots = std::make_unique<SnapshotStore>(
      config.run_dir + "/snapshots",
      [raw](const std::string& pod_id, const std::function<Status(pods::RegionControl&)>& call) {
        return raw->memory_call(pod_id, call);
      });
  auto control = net::RpcServer::start(
      config.control, [raw](const net::Frame& frame, const net::PeerInfo&) { return raw->handle(frame); });
  if (!control) return fail(control.error().context("vmm"));
  impl->control = std::move(*control);
  impl->watcher.start();
  spdlog::info("vmm: serving on {}", impl->control->address().to_string());
  return std::unique_ptr<Vmm>(new Vmm(std::move(impl)));
}

Vmm::~Vmm() {
  impl_->control.reset();
  impl_->watcher.stop();
  for (const auto& vm : impl_->all_vms()) {
    if (vm.state == VmState::kStopped) continue;
    auto stopped = impl_->stop_vm(vm.name);
    if (!stopped) spdlog::warn("vmm: stopping {}: {}", vm.name, stopped.error().to_string());
  }
  impl_->snapshots.reset();
}

const net::SocketAddress& Vmm::control_address() const { return impl_->control->address(); }
Result<PodRecord> Vmm::register_pod(const PodRecord& pod) { return impl_->register_pod(pod); }
std::vector<PodRecord> Vmm::pods() const { return impl_->pod_records(); }
Result<VmRecord> Vmm::create_vm(const VmRequest& request) { return impl_->create_vm(request); }
Status Vmm::stop_vm(const std::string& name) { return impl_->stop_vm(name); }
Status Vmm::remove_vm(const std::string& name) { return impl_->remove_vm(name); }
Result<VmRecord> Vmm::restart_vm(const std::string& name) { return impl_->restart_vm(name); }
Result<MigrationReport> Vmm::migrate_vm(const std::string& name, const std::string& to_compute_pod) {
  return impl_->migrate_vm(name, to_compute_pod);
}
Result<SnapshotRecord> Vmm::snapshot_vm(const std::string& name, const std::string& snapshot, bool stay_paused) {
  return impl_->snapshot_vm(name, snapshot, stay_paused);
}
Result<std::vector<VmRecord>> Vmm::fork_snapshot(const ForkRequest& request) { return impl_->fork_snapshot(request); }
std::vector<SnapshotRecord> Vmm::snapshots() const { return impl_->snapshot_list(); }
Result<SnapshotRecord> Vmm::snapshot(const std::string& name) const { return impl_->snapshot_record(name); }
Status Vmm::delete_snapshot(const std::string& name) { return impl_->delete_snapshot(name); }
Result<VmRecord> Vmm::vm(const std::string& name) const { return impl_->vm(name); }
std::vector<VmRecord> Vmm::vms() const { return impl_->all_vms(); }

Status Vmm::drop_cache(const std::string& name) {
  return impl_->on_compute(name, [&](auto& pod) { return pod.drop_cache(name); });
}

Result<cpuserver::GuestStats> Vmm::vm_stats(const std::string& name) {
  return impl_->on_compute(name, [&](auto& pod) { return pod.stats(name); });
}

void Vmm::on_event(std::function<void(const VmEvent&)> listener) {
  std::lock_guard lock(impl_->mutex);
  impl_->listeners.push_back(std::move(listener));
}

}  // namespace vmpod::vmm
