#include <vmpod/cpuserver/compute_pod.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include <vmpod/base/file.h>
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
// Saving or loading a device state of a few hundred KiB.
constexpr auto kDeviceStateTimeout = std::chrono::seconds(60);
constexpr const char* kRamFile = "ram";

struct Guest {
  GuestRuntime runtime;
  std::unique_ptr<Podfs> podfs;
  std::unique_ptr<QemuProcess> qemu;
  // What the guest's pods counted, kept when it ends so `vmpod run` and the
  // vmm can report a guest that already powered off.
  std::optional<GuestStats> final_stats;
  // Whether its vCPUs ran before send_guest paused them.
  bool sent_running = false;
  // What it read after it was restored, kept when it ends, like final_stats.
  std::optional<ReadRecording> final_working_set;
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
  // Connected clients of the memory pods, shared by the guests' podfs
  // mounts, so that a guest (a clone above all) starts without setting up a
  // fabric endpoint per pod. One that lost its pod is replaced on next use.
  std::mutex clients_mutex;
  std::map<std::string, std::shared_ptr<pods::MemoryPodClient>> clients;

  Result<std::vector<std::shared_ptr<pods::MemoryPodClient>>> clients_for(const MemoryPlacement& placement) {
    std::lock_guard lock(clients_mutex);
    std::vector<std::shared_ptr<pods::MemoryPodClient>> out;
    for (const auto& address : placement.memory_pods) {
      const std::string key = address.to_string() + " " +
                              std::string(net::fabric_provider_name(placement.fabric.provider)) + " " +
                              placement.fabric.node + " " + std::to_string(placement.fabric.max_message);
      std::shared_ptr<pods::MemoryPodClient>& client = clients[key];
      if (!client || !client->alive()) {
        pods::MemoryPodClient::Options options;
        options.fabric = placement.fabric;
        auto connected = pods::MemoryPodClient::connect(address, options);
        if (!connected) {
          clients.erase(key);
          return fail(connected.error());
        }
        client = std::move(*connected);
      }
      out.push_back(client);
    }
    return out;
  }

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
      if (guest.podfs && !guest.final_working_set) {
        auto recorded = guest.podfs->recorded_reads(kRamFile);
        if (recorded) guest.final_working_set = ReadRecording{recorded->extents, true};
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

  Result<GuestRuntime> launch(const GuestSpec& spec, const MemoryPlacement& placement,
                              const GuestTransfer* incoming) {
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
    auto started = start_guest(*guest, spec, placement, incoming);
    std::lock_guard lock(mutex);
    if (!started) {
      guest->runtime.reason = started.error().message();
      return fail(started.error().context(spec.name));
    }
    guest->runtime.state = GuestState::kRunning;
    guest->runtime.reason.clear();
    return guest->runtime;
  }

  // A guest moving in (`incoming`) gets its RAM file on the regions it
  // brings and its device state before its vCPUs run; if anything fails,
  // those regions are left as they were, since they are still the source's.
  Status start_guest(Guest& guest, const GuestSpec& spec, const MemoryPlacement& placement,
                     const GuestTransfer* incoming) {
    const auto started = std::chrono::steady_clock::now();
    std::string run_dir = config.run_dir + "/" + spec.name;
    std::string mount = run_dir + "/mem";
    std::error_code ec;
    std::filesystem::create_directories(mount, ec);
    if (ec) return fail(ErrorCode::kInternal, "cannot create " + mount + ": " + ec.message());

    PodfsConfig podfs_config;
    podfs_config.mountpoint = mount;
    podfs_config.memory_pods = placement.memory_pods;
    auto clients = clients_for(placement);
    if (!clients) return fail(clients.error().context("podfs"));
    podfs_config.connected_pods = std::move(*clients);
    podfs_config.fabric = placement.fabric;
    podfs_config.stripe_bytes = placement.stripe_bytes;
    podfs_config.local_cache_bytes = placement.local_cache_bytes;
    podfs_config.owner = config.pod_id + "/" + spec.name;
    auto podfs = Podfs::mount(podfs_config);
    if (!podfs) return fail(podfs.error());
    guest.podfs = std::move(*podfs);
    auto abandon = [&](const Error& error) -> Status {
      if (incoming) guest.podfs->disown_regions();
      if (guest.qemu) (void)guest.qemu->shutdown(kShutdownGrace);
      guest.qemu.reset();
      guest.podfs.reset();
      return fail(error);
    };
    const std::string state_file = run_dir + "/device-state.in";
    if (incoming) {
      if (auto adopted = guest.podfs->adopt_file(kRamFile, incoming->ram); !adopted) return abandon(adopted.error());
      if (auto written = write_file(state_file, incoming->device_state); !written) return abandon(written.error());
      // Both start before QEMU does: what the guest reads from its first
      // instruction on is recorded, and the prefetch runs ahead of it.
      if (incoming->record_reads.count() > 0) {
        if (auto recording = guest.podfs->record_reads(kRamFile, incoming->record_reads); !recording) {
          return abandon(recording.error());
        }
      }
      if (!incoming->prefetch.empty()) {
        if (auto fetching = guest.podfs->prefetch(kRamFile, incoming->prefetch); !fetching) {
          return abandon(fetching.error());
        }
      }
    }

    QemuConfig qemu_config;
    qemu_config.guest = spec;
    qemu_config.qemu_binary = config.qemu_binary;
    qemu_config.mem_path = mount + "/" + kRamFile;
    qemu_config.run_dir = run_dir;
    qemu_config.incoming = incoming != nullptr;
    const auto mounted = std::chrono::steady_clock::now();
    auto qemu = QemuProcess::start(qemu_config);
    if (!qemu) return abandon(qemu.error());
    guest.qemu = std::move(*qemu);
    if (incoming) {
      const auto monitor_up = std::chrono::steady_clock::now();
      if (auto loaded = guest.qemu->load_device_state(state_file, kDeviceStateTimeout); !loaded) {
        return abandon(loaded.error());
      }
      if (incoming->running) {
        if (auto resumed = guest.qemu->resume(); !resumed) return abandon(resumed.error());
      }
      std::filesystem::remove(state_file, ec);
      auto ms = [](auto from, auto to) { return std::chrono::duration<double, std::milli>(to - from).count(); };
      const auto now = std::chrono::steady_clock::now();
      spdlog::info("{}: received in {:.1f} ms: podfs {:.1f} ms, QEMU to its monitor {:.1f} ms, device state and {} "
                   "{:.1f} ms",
                   spec.name, ms(started, now), ms(started, mounted), ms(mounted, monitor_up),
                   incoming->running ? "cont" : "no cont", ms(monitor_up, now));
    }
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

  Result<GuestTransfer> send_guest(const std::string& name) {
    auto guest = running_guest(name);
    if (!guest) return fail(guest.error());
    Guest& g = **guest;
    const std::string state_file = g.runtime.run_dir + "/device-state.out";
    auto running = g.qemu->vcpus_running();
    if (!running) return fail(running.error().context(name));
    auto sent = [&]() -> Result<GuestTransfer> {
      // Most dirty pages go back while the guest still runs; the rest,
      // once it is paused, so that no guest write lands after the last.
      // The cache stays: it is still right if the guest runs on here.
      VMPOD_TRY_CTX(write_back(g.runtime.ram_file), "send: writing the RAM back");
      VMPOD_TRY_CTX(g.qemu->pause(), "send");
      VMPOD_TRY_CTX(write_back(g.runtime.ram_file), "send: writing the RAM back");
      VMPOD_TRY_CTX(g.qemu->save_device_state(state_file, kDeviceStateTimeout), "send");
      auto state = read_file(state_file);
      if (!state) return fail(state.error());
      auto ram = g.podfs->file_regions(kRamFile);
      if (!ram) return fail(ram.error());
      GuestTransfer transfer;
      transfer.device_state = std::move(*state);
      transfer.ram = std::move(*ram);
      transfer.running = *running;
      return transfer;
    }();
    std::error_code ec;
    std::filesystem::remove(state_file, ec);
    if (!sent) {
      auto resumed = *running ? g.qemu->resume() : Status{};
      if (!resumed) spdlog::error("{}: resuming after a failed send: {}", name, resumed.error().to_string());
      return fail(sent.error().context(name));
    }
    g.sent_running = *running;
    spdlog::info("{}: sent: {} bytes of device state", name, sent->device_state.size());
    return sent;
  }

  Status finish_send(const std::string& name) {
    auto guest = running_guest(name);
    if (!guest) return fail(guest.error());
    (*guest)->podfs->disown_regions();
    tear_down(**guest);
    std::lock_guard lock(mutex);
    (*guest)->runtime.state = GuestState::kStopped;
    (*guest)->runtime.reason = "moved to another compute pod";
    return {};
  }

  Status cancel_send(const std::string& name) {
    auto guest = running_guest(name);
    if (!guest) return fail(guest.error());
    return (*guest)->sent_running ? (*guest)->qemu->resume() : Status{};
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
        auto runtime = launch(*spec, *placement, nullptr);
        if (!runtime) return fail(runtime.error());
        return pack_runtime(*runtime);
      }
      case MessageType::kCpuReceiveGuest: {
        auto request = net::unpack<Vmpod__Pods__ReceiveGuestRequest>(
            vmpod__pods__receive_guest_request__descriptor, frame.body);
        if (!request) return fail(request.error());
        if ((*request)->launch == nullptr) return fail(ErrorCode::kInvalidArgument, "receive: no guest");
        auto spec = guest_spec_from((*request)->launch->guest);
        if (!spec) return fail(spec.error());
        auto placement = placement_from((*request)->launch->placement);
        if (!placement) return fail(placement.error());
        auto transfer = transfer_from((*request)->transfer);
        if (!transfer) return fail(transfer.error());
        auto runtime = launch(*spec, *placement, &*transfer);
        if (!runtime) return fail(runtime.error());
        return pack_runtime(*runtime);
      }
      case MessageType::kCpuSendGuest: {
        auto request = net::unpack<Vmpod__Pods__VmName>(vmpod__pods__vm_name__descriptor, frame.body);
        if (!request) return fail(request.error());
        auto transfer = send_guest((*request)->name);
        if (!transfer) return fail(transfer.error());
        TransferMessage reply(*transfer);
        return net::pack_message(reply.message.base);
      }
      case MessageType::kCpuFinishSend:
      case MessageType::kCpuCancelSend: {
        auto request = net::unpack<Vmpod__Pods__VmName>(vmpod__pods__vm_name__descriptor, frame.body);
        if (!request) return fail(request.error());
        Status done = frame.type == pods::wire(MessageType::kCpuFinishSend) ? finish_send((*request)->name)
                                                                             : cancel_send((*request)->name);
        if (!done) return fail(done.error());
        return pods::empty_message();
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
      case MessageType::kCpuWorkingSet: {
        auto request = net::unpack<Vmpod__Pods__VmName>(vmpod__pods__vm_name__descriptor, frame.body);
        if (!request) return fail(request.error());
        auto recording = working_set((*request)->name);
        if (!recording) return fail(recording.error());
        return pack_working_set(*recording);
      }
      case MessageType::kCpuStatus: return status();
      default:
        return fail(ErrorCode::kInvalidArgument, "unknown message type " + std::to_string(frame.type));
    }
  }

  Status drop_cache(const std::string& name) {
    auto guest = running_guest(name);
    if (!guest) return fail(guest.error());
    return (*guest)->podfs->drop_cache();
  }

  Result<ReadRecording> working_set(const std::string& name) const {
    auto guest = find(name);
    if (!guest) return fail(guest.error());
    std::lock_guard lock(mutex);
    if ((*guest)->final_working_set) return *(*guest)->final_working_set;
    if (!(*guest)->podfs) return fail(ErrorCode::kNotFound, "guest '" + name + "' recorded no reads");
    return (*guest)->podfs->recorded_reads(kRamFile);
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
  return impl_->launch(guest, placement, nullptr);
}

Result<GuestTransfer> ComputePod::send_guest(const std::string& name) { return impl_->send_guest(name); }
Status ComputePod::finish_send(const std::string& name) { return impl_->finish_send(name); }
Status ComputePod::cancel_send(const std::string& name) { return impl_->cancel_send(name); }

Result<GuestRuntime> ComputePod::receive_guest(const GuestSpec& guest, const MemoryPlacement& placement,
                                               const GuestTransfer& transfer) {
  return impl_->launch(guest, placement, &transfer);
}

Result<ReadRecording> ComputePod::working_set(const std::string& name) const { return impl_->working_set(name); }

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
