#include <vmpod/cpuserver/compute_pod.h>

#include <sys/stat.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include <vmpod/base/periodic_task.h>
#include <vmpod/net/message.h>
#include <vmpod/pods/rpc.h>
#include <vmpod/pods/protocol.h>

#include <vmpod/cpuserver/compute_protocol.h>

namespace vmpod::cpuserver {

using pods::MessageType;

std::string_view guest_state_name(GuestState state) {
  switch (state) {
    case GuestState::kRunning: return "running";
    case GuestState::kStopped: return "stopped";
    case GuestState::kFailed: return "failed";
  }
  return "failed";
}

namespace {

constexpr auto kSupervisePeriod = std::chrono::milliseconds(200);
constexpr auto kShutdownGrace = std::chrono::seconds(3);

struct Guest {
  GuestRuntime runtime;
  std::unique_ptr<Podfs> podfs;
  std::unique_ptr<QemuProcess> qemu;
  // What the guest's pods counted, kept when it ends so `vmpod run` and the
  // vmm can report a guest that already powered off.
  std::optional<GuestStats> final_stats;
};

Result<GuestStats> live_stats(const Guest& guest) {
  GuestStats stats;
  stats.podfs = guest.podfs->stats();
  auto memory = guest.podfs->memory_pod_stats();
  if (!memory) return fail(memory.error());
  stats.memory_pods = std::move(*memory);
  return stats;
}

}  // namespace

struct ComputePod::Impl {
  ComputePodConfig config;
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<Guest>> guests;
  std::unique_ptr<net::RpcServer> control;
  PeriodicTask supervisor{kSupervisePeriod, [this] { supervise_once(); }};

  // Ends a guest: QEMU first (it holds the RAM file), then its podfs, whose
  // unmount deletes the guest's regions. The parts are taken out under the
  // lock and torn down outside it.
  void tear_down(Guest& guest) {
    std::unique_ptr<Podfs> podfs;
    std::unique_ptr<QemuProcess> qemu;
    {
      std::lock_guard lock(mutex);
      if (guest.podfs && !guest.final_stats) {
        auto stats = live_stats(guest);
        // A lost memory pod cannot report; podfs's own counters still can.
        guest.final_stats = stats ? *stats : GuestStats{guest.podfs->stats(), {}};
      }
      podfs = std::move(guest.podfs);
      qemu = std::move(guest.qemu);
    }
    if (qemu) {
      auto stopped = qemu->shutdown(kShutdownGrace);
      if (!stopped) spdlog::error("{}: {}", guest.runtime.name, stopped.error().to_string());
    }
    qemu.reset();
    podfs.reset();
  }

  // Marks a running guest failed or stopped when QEMU ended or its memory
  // is gone; a guest whose RAM lost a pod cannot go on, so QEMU is stopped.
  void supervise_once() {
    std::vector<std::shared_ptr<Guest>> running;
    {
      std::lock_guard lock(mutex);
      for (auto& [name, guest] : guests) {
        if (guest->runtime.state == GuestState::kRunning) running.push_back(guest);
      }
    }
    for (auto& guest : running) {
      std::unique_lock lock(mutex);
      if (!guest->podfs || !guest->qemu) continue;  // being stopped
      std::optional<std::string> lost = guest->podfs->failure();
      bool alive = guest->qemu->running();
      if (!lost && alive) continue;
      GuestState state = GuestState::kFailed;
      std::string reason;
      if (lost) {
        reason = *lost;
      } else if (guest->qemu->exit_status() && WIFEXITED(*guest->qemu->exit_status()) &&
                 WEXITSTATUS(*guest->qemu->exit_status()) == 0) {
        state = GuestState::kStopped;
        reason = "guest powered off";
      } else {
        reason = "qemu ended: " + guest->qemu->exit_reason();
      }
      lock.unlock();
      spdlog::log(state == GuestState::kFailed ? spdlog::level::err : spdlog::level::info,
                  "{}: {}: {}", guest->runtime.name, guest_state_name(state), reason);
      tear_down(*guest);
      lock.lock();
      guest->runtime.state = state;
      guest->runtime.reason = reason;
    }
  }

  Result<std::shared_ptr<Guest>> find(const std::string& name) const {
    std::lock_guard lock(mutex);
    auto it = guests.find(name);
    if (it == guests.end()) return fail(ErrorCode::kNotFound, "no guest named '" + name + "'");
    return it->second;
  }

  Result<GuestRuntime> launch(const GuestSpec& spec, const MemoryPlacement& placement) {
    auto guest = std::make_shared<Guest>();
    {
      std::lock_guard lock(mutex);
      auto it = guests.find(spec.name);
      if (it != guests.end() && it->second->runtime.state == GuestState::kRunning) {
        return fail(ErrorCode::kAlreadyExists, "guest '" + spec.name + "' is running");
      }
      // Reserve the name while the pods are set up, outside the lock.
      guest->runtime.name = spec.name;
      guest->runtime.state = GuestState::kFailed;
      guest->runtime.reason = "starting";
      guests[spec.name] = guest;
    }
    auto started = start_guest(*guest, spec, placement);
    std::lock_guard lock(mutex);
    if (!started) {
      guest->runtime.reason = started.error().message();
      return fail(started.error().context(spec.name));
    }
    guest->runtime.state = GuestState::kRunning;
    guest->runtime.reason.clear();
    return guest->runtime;
  }

  Status start_guest(Guest& guest, const GuestSpec& spec, const MemoryPlacement& placement) {
    std::string run_dir = config.run_dir + "/" + spec.name;
    std::string mount = run_dir + "/mem";
    std::error_code ec;
    std::filesystem::create_directories(mount, ec);
    if (ec) return fail(ErrorCode::kInternal, "cannot create " + mount + ": " + ec.message());

    PodfsConfig podfs_config;
    podfs_config.mountpoint = mount;
    podfs_config.memory_pods = placement.memory_pods;
    podfs_config.fabric = placement.fabric;
    podfs_config.stripe_bytes = placement.stripe_bytes;
    podfs_config.local_cache_bytes = placement.local_cache_bytes;
    podfs_config.owner = config.pod_id + "/" + spec.name;
    auto podfs = Podfs::mount(podfs_config);
    if (!podfs) return fail(podfs.error());
    guest.podfs = std::move(*podfs);

    QemuConfig qemu_config;
    qemu_config.guest = spec;
    qemu_config.qemu_binary = config.qemu_binary;
    qemu_config.mem_path = mount + "/ram";
    qemu_config.run_dir = run_dir;
    auto qemu = QemuProcess::start(qemu_config);
    if (!qemu) {
      guest.podfs.reset();
      return fail(qemu.error());
    }
    guest.qemu = std::move(*qemu);
    guest.runtime.qemu_pid = guest.qemu->pid();
    guest.runtime.accel = guest.qemu->accel();
    guest.runtime.run_dir = run_dir;
    guest.runtime.paths = guest.qemu->paths();
    guest.runtime.ram_file = qemu_config.mem_path;
    return {};
  }

  Status stop(const std::string& name) {
    auto guest = find(name);
    if (!guest) return fail(guest.error());
    tear_down(**guest);
    std::lock_guard lock(mutex);
    if ((*guest)->runtime.state == GuestState::kRunning) {
      (*guest)->runtime.state = GuestState::kStopped;
      (*guest)->runtime.reason = "stopped on request";
    }
    return {};
  }

  Result<std::shared_ptr<Guest>> running_guest(const std::string& name) const {
    auto guest = find(name);
    if (!guest) return fail(guest.error());
    std::lock_guard lock(mutex);
    if ((*guest)->runtime.state != GuestState::kRunning || !(*guest)->podfs) {
      return fail(ErrorCode::kWrongState, "guest '" + name + "' is not running");
    }
    return guest;
  }

  // --- control protocol --------------------------------------------------

  Result<std::string> handle(const net::Frame& frame) {
    switch (static_cast<MessageType>(frame.type)) {
      case MessageType::kCpuLaunch: {
        auto request = net::unpack<Vmpod__Pods__LaunchRequest>(
            vmpod__pods__launch_request__descriptor, frame.body);
        if (!request) return fail(request.error());
        auto spec = guest_spec_from((*request)->guest);
        if (!spec) return fail(spec.error());
        auto placement = placement_from((*request)->placement);
        if (!placement) return fail(placement.error());
        auto runtime = launch(*spec, *placement);
        if (!runtime) return fail(runtime.error());
        return pack_runtime(*runtime);
      }
      case MessageType::kCpuStop:
      case MessageType::kCpuDropCache:
      case MessageType::kCpuStats: {
        auto request = net::unpack<Vmpod__Pods__VmName>(vmpod__pods__vm_name__descriptor, frame.body);
        if (!request) return fail(request.error());
        std::string name = (*request)->name;
        if (frame.type == pods::wire(MessageType::kCpuStats)) {
          auto stats = guest_stats(name);
          if (!stats) return fail(stats.error());
          return pack_stats(name, *stats);
        }
        Status done = frame.type == pods::wire(MessageType::kCpuStop) ? stop(name) : drop_cache(name);
        if (!done) return fail(done.error());
        return pods::empty_message();
      }
      case MessageType::kCpuStatus: return status();
      default:
        return fail(ErrorCode::kInvalidArgument, "unknown message type " + std::to_string(frame.type));
    }
  }

  static Result<MemoryPlacement> placement_from(const Vmpod__Pods__MemoryPlacement* message) {
    if (message == nullptr || message->n_memory_pods == 0) {
      return fail(ErrorCode::kInvalidArgument, "a guest needs at least one memory pod");
    }
    MemoryPlacement placement;
    for (size_t i = 0; i < message->n_memory_pods; ++i) {
      auto address = net::parse_socket_address(message->memory_pods[i]);
      if (!address) return fail(address.error());
      placement.memory_pods.push_back(*address);
    }
    auto provider = net::parse_fabric_provider(message->provider[0] ? message->provider : "tcp");
    if (!provider) return fail(provider.error());
    placement.fabric.provider = *provider;
    if (message->stripe_bytes != 0) placement.stripe_bytes = message->stripe_bytes;
    placement.local_cache_bytes = message->local_cache_bytes;
    return placement;
  }

  Status drop_cache(const std::string& name) {
    auto guest = running_guest(name);
    if (!guest) return fail(guest.error());
    return (*guest)->podfs->drop_cache();
  }

  Result<GuestStats> guest_stats(const std::string& name) const {
    auto guest = find(name);
    if (!guest) return fail(guest.error());
    std::lock_guard lock(mutex);
    if ((*guest)->final_stats) return *(*guest)->final_stats;
    if ((*guest)->runtime.state != GuestState::kRunning || !(*guest)->podfs) {
      return fail(ErrorCode::kWrongState, "guest '" + name + "' has no statistics yet");
    }
    return live_stats(**guest);
  }

  std::vector<GuestRuntime> all() const {
    std::lock_guard lock(mutex);
    std::vector<GuestRuntime> out;
    for (const auto& [name, guest] : guests) out.push_back(guest->runtime);
    return out;
  }

  std::string status() const {
    std::deque<RuntimeMessage> messages;  // never moves what it holds
    for (const auto& runtime : all()) messages.emplace_back(runtime);
    std::vector<Vmpod__Pods__VmRuntime*> pointers;
    for (auto& message : messages) pointers.push_back(&message.message);
    Vmpod__Pods__ComputeStatus reply = VMPOD__PODS__COMPUTE_STATUS__INIT;
    reply.pod_id = const_cast<char*>(config.pod_id.c_str());
    reply.n_vms = pointers.size();
    reply.vms = pointers.data();
    return net::pack_message(reply.base);
  }
};

ComputePod::ComputePod(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<ComputePod>> ComputePod::start(const ComputePodConfig& config) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  std::error_code ec;
  std::filesystem::create_directories(config.run_dir, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot create " + config.run_dir + ": " + ec.message());
  Impl* raw = impl.get();
  auto control = net::RpcServer::start(
      config.control, [raw](const net::Frame& frame, const net::PeerInfo&) { return raw->handle(frame); });
  if (!control) return fail(control.error().context(config.pod_id));
  impl->control = std::move(*control);
  impl->supervisor.start();
  spdlog::info("{}: compute pod on {}, guests in {}", config.pod_id,
               impl->control->address().to_string(), config.run_dir);
  return std::unique_ptr<ComputePod>(new ComputePod(std::move(impl)));
}

ComputePod::~ComputePod() {
  impl_->control.reset();
  impl_->supervisor.stop();
  for (auto& [name, guest] : impl_->guests) impl_->tear_down(*guest);
}

const net::SocketAddress& ComputePod::control_address() const { return impl_->control->address(); }

Result<GuestRuntime> ComputePod::launch(const GuestSpec& guest, const MemoryPlacement& placement) {
  return impl_->launch(guest, placement);
}

Status ComputePod::stop(const std::string& name) { return impl_->stop(name); }
Status ComputePod::drop_cache(const std::string& name) { return impl_->drop_cache(name); }

Result<GuestRuntime> ComputePod::guest(const std::string& name) const {
  auto guest = impl_->find(name);
  if (!guest) return fail(guest.error());
  std::lock_guard lock(impl_->mutex);
  return (*guest)->runtime;
}

std::vector<GuestRuntime> ComputePod::guests() const { return impl_->all(); }

Result<GuestStats> ComputePod::stats(const std::string& name) const { return impl_->guest_stats(name); }

}  // namespace vmpod::cpuserver
