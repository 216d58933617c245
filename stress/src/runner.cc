#include <vmpod/stress/runner.h>

#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <future>
#include <fstream>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/base/file.h>
#include <vmpod/base/subprocess.h>
#include <vmpod/cpuserver/guest_agent.h>
#include <vmpod/cpuserver/guest_identity.h>
#include <vmpod/cpuserver/qemu.h>

namespace vmpod::stress {

namespace {

using Clock = std::chrono::steady_clock;

// Bumped when what a base snapshot holds changes meaning.
constexpr std::string_view kBaseFormat = "vmpod-stress-base-1";
constexpr std::chrono::seconds kAgentTimeout{120};
constexpr std::chrono::seconds kPrologueTimeout{60};
// The most of a clone's console a report keeps: its end, where a failure shows.
constexpr size_t kConsoleKept = 64 * 1024;
// A base machine loads virtio_net before its snapshot (so that its clones'
// NIC is up for the prologue to give its MAC) and not virtio_blk, so that
// its clones see their own code disk when they load it.
constexpr std::string_view kBaseModules = "vmpod.modules=virtio_net";
constexpr const char* kCodeSerial = "vmpod-code";

double ms_since(Clock::time_point start, Clock::time_point end = Clock::now()) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

struct Fnv64 {
  uint64_t value = 0xcbf29ce484222325ull;
  void add(std::string_view bytes) {
    for (unsigned char c : bytes) value = (value ^ c) * 0x100000001b3ull;
    // A separator, so that ("ab", "c") and ("a", "bc") differ.
    value = (value ^ 0xff) * 0x100000001b3ull;
  }
};

Status hash_file(Fnv64& hash, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(ErrorCode::kNotFound, "cannot read " + path);
  std::string chunk(1 << 20, '\0');
  while (in) {
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    hash.add(std::string_view(chunk.data(), static_cast<size_t>(in.gcount())));
  }
  return {};
}

std::string new_session_id() {
  uint32_t bits = 0;
  if (::getrandom(&bits, sizeof(bits), 0) != sizeof(bits)) bits = static_cast<uint32_t>(::getpid());
  return fmt::format("st-{:08x}", bits);
}

std::string shell_quote(std::string_view text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The console's last `limit` bytes, saying so when it was longer.
std::string console_tail(const std::string& path, size_t limit) {
  auto text = read_file_tail(path, limit + 1);
  if (!text) return "[no console: " + text.error().message() + "]\n";
  if (text->size() <= limit) return *text;
  return "[console cut to its last " + std::to_string(limit) + " bytes]\n" + text->substr(1);
}

// Runs a tool to its end; its output goes to log_path.
Status run_tool(const std::vector<std::string>& argv, const std::string& log_path) {
  auto child = Subprocess::spawn(argv, log_path);
  if (!child) return fail(child.error());
  while (child->running()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto status = child->wait_status();
  if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return fail(ErrorCode::kInternal, argv[0] + " failed; see " + log_path);
  }
  return {};
}

// Applied in every clone before its test, by vmpod and not by the test:
// the MAC the vmm gave its QEMU (the NIC's state came from the base), a
// machine id and host name of its own, and the code under test mounted
// read-only from its code disk.
std::string clone_prologue(const vmm::VmRecord& clone, const CodePlan& code) {
  std::string script = "set -e\n";
  if (!clone.guest.mac.empty()) {
    script += "for nic in /sys/class/net/*; do [ \"$(basename $nic)\" = lo ] && continue; "
              "ip link set dev \"$(basename $nic)\" address " + clone.guest.mac + "; break; done\n";
  }
  script += "echo " + cpuserver::new_machine_id() + " > /etc/machine-id\n";
  script += "hostname " + shell_quote(clone.name) + "\n";
  if (!code.dir.empty()) {
    script += "modprobe virtio_blk; modprobe squashfs\n"
              "disk=''\n"
              "for try in $(seq 1 100); do\n"
              "  for s in /sys/block/vd*/serial; do\n"
              "    [ -e \"$s\" ] && [ \"$(cat $s)\" = " + std::string(kCodeSerial) + " ] && disk=$(basename $(dirname $s))\n"
              "  done\n"
              "  [ -n \"$disk\" ] && break; sleep 0.05\n"
              "done\n"
              "[ -n \"$disk\" ] || { echo 'vmpod: no code disk in the clone' >&2; exit 1; }\n"
              "mkdir -p " + shell_quote(code.mount) + "\n"
              "mount -t squashfs -o ro /dev/$disk " + shell_quote(code.mount) + "\n";
  }
  return script;
}

uint64_t region_pages(const cpuserver::GuestStats& stats) {
  uint64_t pages = 0;
  for (const auto& pod : stats.memory_pods) pages += pod.region_pages;
  return pages;
}

}  // namespace

Result<std::string> base_snapshot_name(const StressPlan& plan, const StressOptions& options) {
  Fnv64 hash;
  hash.add(kBaseFormat);
  const std::string kernel = plan.guest.kernel.empty() ? options.default_kernel : plan.guest.kernel;
  const std::string initrd = plan.guest.initrd.empty() ? options.default_initrd : plan.guest.initrd;
  VMPOD_TRY_CTX(hash_file(hash, kernel), "base snapshot");
  VMPOD_TRY_CTX(hash_file(hash, initrd), "base snapshot");
  hash.add(std::to_string(plan.guest.memory_bytes));
  hash.add(std::to_string(plan.guest.cpus));
  hash.add(plan.guest.append);
  hash.add(plan.base.setup);
  hash.add(plan.base.ready);
  return fmt::format("stress-{:016x}", hash.value);
}

std::string report_path(const std::string& state_dir, const std::string& session) {
  return state_dir + "/" + session + "/report.json";
}

Result<StressReport> load_report(const std::string& state_dir, const std::string& session) {
  std::string path = report_path(state_dir, session);
  auto text = read_file(path);
  if (!text) return fail(ErrorCode::kNotFound, "no report " + path + " (is --state-dir the run's?)");
  auto report = report_from_json(*text);
  if (!report) return fail(report.error().context(path));
  return report;
}

Result<std::pair<std::string, std::string>> split_run_id(const std::string& run_id) {
  size_t dash = run_id.rfind("-r");
  if (dash == std::string::npos || dash == 0 || dash + 2 >= run_id.size()) {
    return fail(ErrorCode::kInvalidArgument, "'" + run_id + "' is not a run id (SESSION-rNNNN, as the report names them)");
  }
  return std::pair{run_id.substr(0, dash), run_id.substr(dash + 1)};
}

StressRunner::StressRunner(net::SocketAddress vmm, StressPlan plan, StressOptions options)
    : vmm_address_(std::move(vmm)),
      plan_(std::move(plan)),
      options_(std::move(options)),
      session_(new_session_id()),
      session_dir_(options_.state_dir + "/" + session_) {}

void StressRunner::track(const std::string& vm, bool live) {
  std::lock_guard lock(live_mutex_);
  if (live) live_vms_.insert(vm);
  else live_vms_.erase(vm);
}

void StressRunner::interrupt() {
  interrupted_ = true;
  std::set<std::string> live;
  {
    std::lock_guard lock(live_mutex_);
    live = live_vms_;
  }
  if (live.empty()) return;
  auto vmm = vmm::VmmClient::connect(vmm_address_, std::chrono::seconds(5));
  if (!vmm) {
    spdlog::warn("stress: cannot stop the clones: {}", vmm.error().to_string());
    return;
  }
  // Stopping a clone ends its agent's channel, so its worker returns.
  for (const auto& name : live) {
    if (auto stopped = (*vmm)->stop_vm(name); !stopped) {
      spdlog::warn("stress: stopping {}: {}", name, stopped.error().to_string());
    }
  }
}

void StressRunner::progress(const std::string& phase, size_t total, size_t running, size_t done, size_t failed) {
  if (!options_.on_progress) return;
  options_.on_progress(StressProgress{total, running, done, failed, ms_since(started_) / 1000.0, phase});
}

Result<std::string> StressRunner::build_code_image() {
  if (plan_.code.dir.empty()) return std::string();
  if (!std::filesystem::is_directory(plan_.code.dir)) {
    return fail(ErrorCode::kNotFound, "code dir " + plan_.code.dir + " is not a directory");
  }
  // Fixed times and owners: the same code gives the same image.
  std::string image = session_dir_ + "/code.sqfs";
  VMPOD_TRY_CTX(run_tool({"mksquashfs", plan_.code.dir, image, "-noappend", "-quiet", "-all-root", "-mkfs-time",
                          "0", "-all-time", "0"},
                         session_dir_ + "/mksquashfs.log"),
                "code image");
  return image;
}

Result<std::string> StressRunner::prepare_base(StressReport& report) {
  auto name = base_snapshot_name(plan_, options_);
  if (!name) return fail(name.error());
  auto vmm = vmm::VmmClient::connect(vmm_address_, std::chrono::seconds(5));
  if (!vmm) return fail(vmm.error());
  if ((*vmm)->snapshot(*name)) {
    report.base_reused = true;
    return *name;
  }
  auto started = Clock::now();
  progress("base", 0, 1, 0, 0);
  // Clones replace this disk with their code image; the base never reads it.
  std::string placeholder = options_.state_dir + "/code-placeholder.img";
  if (!std::filesystem::exists(placeholder)) {
    VMPOD_TRY_CTX(write_file_atomically(placeholder, std::string(1 << 20, '\0')), "code placeholder");
  }
  vmm::VmRequest request;
  cpuserver::GuestSpec& guest = request.guest;
  guest.name = "base-" + name->substr(name->size() - 8) + "-" + session_.substr(3);
  guest.memory_bytes = plan_.guest.memory_bytes;
  guest.cpus = plan_.guest.cpus;
  guest.kernel = plan_.guest.kernel.empty() ? options_.default_kernel : plan_.guest.kernel;
  guest.initrd = plan_.guest.initrd.empty() ? options_.default_initrd : plan_.guest.initrd;
  guest.append = std::string(cpuserver::kGuestImageAppend) + " " + std::string(kBaseModules) +
                 (plan_.guest.append.empty() ? "" : " " + plan_.guest.append);
  guest.code_disk = placeholder;
  guest.generation_id = cpuserver::new_generation_id();
  guest.mac = cpuserver::new_mac();
  auto base = (*vmm)->create_vm(request);
  if (!base) return fail(base.error().context("base machine"));
  track(base->name, true);
  auto built = [&]() -> Status {
    auto agent = cpuserver::GuestAgent::connect(base->runtime.paths.agent_socket, kAgentTimeout);
    if (!agent) return fail(agent.error().context("base machine"));
    if (!plan_.base.setup.empty()) {
      auto setup = (*agent)->run_with_limit(plan_.base.setup, plan_.base.setup_timeout);
      if (!setup) return fail(setup.error().context("base setup"));
      if (setup->timed_out || setup->exit_code != 0) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("base setup {}: {}", setup->timed_out ? "timed out" : "exited " +
                                std::to_string(setup->exit_code), setup->output));
      }
    }
    if (!plan_.base.ready.empty()) {
      auto deadline = Clock::now() + plan_.base.ready_timeout;
      while (true) {
        if (interrupted_) return fail(ErrorCode::kWrongState, "interrupted");
        auto ready = (*agent)->run_with_limit(plan_.base.ready, plan_.base.ready_timeout);
        if (!ready) return fail(ready.error().context("readiness check"));
        if (!ready->timed_out && ready->exit_code == 0) break;
        if (Clock::now() >= deadline) {
          return fail(ErrorCode::kUnavailable, "base machine not ready in " +
                                                   std::to_string(plan_.base.ready_timeout.count()) +
                                                   " ms: " + ready->output);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
    }
    if (interrupted_) return fail(ErrorCode::kWrongState, "interrupted");
    auto snapshot = (*vmm)->snapshot_vm(base->name, *name, true);
    if (!snapshot) return fail(snapshot.error().context("base snapshot"));
    return {};
  }();
  discard(**vmm, base->name);
  track(base->name, false);
  if (!built) return fail(built.error());
  report.base_ms = ms_since(started);
  return *name;
}

RunResult StressRunner::run_one(vmm::VmmClient& vmm, const RunSpec& spec, const std::string& base,
                                const std::string& code_image) {
  RunResult result;
  result.spec = spec;
  RunObservation seen;
  auto started = Clock::now();
  vmm::ForkRequest fork;
  fork.snapshot = base;
  fork.name_prefix = session_ + "-" + spec.id;
  fork.prefetch = options_.prefetch;
  fork.code_disk = code_image;
  auto forked = vmm.fork_snapshot(fork);
  result.fork_ms = ms_since(started);
  if (!forked || forked->empty()) {
    seen.vmpod_error = forked ? "fork gave no clone" : forked.error().message();
    result.judgement = judge_run(seen, plan_.failure);
    result.total_ms = ms_since(started);
    return result;
  }
  const vmm::VmRecord clone = forked->front();
  result.clone = clone.name;
  track(clone.name, true);
  Result<std::unique_ptr<cpuserver::GuestAgent>> agent = fail(ErrorCode::kWrongState, "interrupted");
  if (!interrupted_) agent = cpuserver::GuestAgent::connect(clone.runtime.paths.agent_socket, kAgentTimeout);
  if (!agent) {
    seen.vmpod_error = agent.error().message();
  } else if (auto prologue = (*agent)->run(clone_prologue(clone, plan_.code), kPrologueTimeout);
             !prologue || prologue->exit_code != 0) {
    seen.vmpod_error = "clone prologue: " + (prologue ? prologue->output : prologue.error().message());
  } else {
    auto test = (*agent)->run_with_limit(spec.command, plan_.test.time_limit);
    if (test) {
      result.first_instruction_ms = ms_since(started, test->started_at);
      result.command_ms = ms_since(test->started_at);
      seen.timed_out = test->timed_out;
      if (!test->timed_out) seen.exit_code = test->exit_code;
      seen.output = test->output;
    } else {
      // The channel ended under the test: the guest went down (a panic
      // reboots it, and QEMU runs with -no-reboot), or vmpod stopped it.
      auto now = vmm.vm(clone.name);
      bool gone = now && !vmm::vm_has_qemu(now->state);
      seen.guest_panicked = gone && !interrupted_;
      if (!seen.guest_panicked) seen.vmpod_error = test.error().message();
    }
  }
  seen.console = console_tail(clone.runtime.paths.serial_log, kConsoleKept);
  if (seen.console.find("Kernel panic") != std::string::npos) seen.guest_panicked = true;
  if (auto stats = vmm.vm_stats(clone.name)) {
    result.bytes_fetched = stats->podfs.bytes_read;
    result.bytes_written = stats->podfs.bytes_written;
    result.pages_held = region_pages(*stats);
  }
  result.judgement = judge_run(seen, plan_.failure);
  result.exit_code = seen.exit_code;
  result.output = seen.output;
  result.console = seen.console;
  bool failed = result.judgement.verdict != Verdict::kPassed && !interrupted_;
  if (failed) {
    // Its snapshot keeps the failure as it was, for `vmpod stress replay`.
    const std::string snapshot = session_ + "-" + spec.id;
    auto now = vmm.vm(clone.name);
    if (now && vmm::vm_has_qemu(now->state)) {
      auto taken = vmm.snapshot_vm(clone.name, snapshot, !options_.keep_failed);
      if (taken) result.failure_snapshot = snapshot;
      else spdlog::warn("stress: snapshot of {}: {}", clone.name, taken.error().to_string());
    }
  }
  result.kept = failed && options_.keep_failed;
  result.total_ms = ms_since(started);
  return result;
}

void StressRunner::release_clone(vmm::VmmClient& vmm, const std::string& clone, bool kept) {
  if (clone.empty()) return;
  if (!kept) discard(vmm, clone);
  track(clone, false);
}

void StressRunner::discard(vmm::VmmClient& vmm, const std::string& vm) {
  // Removed, not only stopped: a vmm that outlives many plans would
  // otherwise keep every clone's endpoint.
  Status gone = vmm.stop_vm(vm);
  if (gone) gone = vmm.remove_vm(vm);
  if (!gone) spdlog::warn("stress: removing {}: {}", vm, gone.error().to_string());
}

Result<StressReport> StressRunner::run() {
  started_ = Clock::now();
  auto runs = expand_runs(plan_);
  if (!runs) return fail(runs.error());
  std::error_code ec;
  std::filesystem::create_directories(session_dir_, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot create " + session_dir_ + ": " + ec.message());
  StressReport report;
  report.plan_name = plan_.name;
  report.plan_path = plan_.path;
  report.started_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count();
  auto code_image = build_code_image();
  if (!code_image) return fail(code_image.error());
  report.code_image = *code_image;
  auto base = prepare_base(report);
  if (!base) {
    if (interrupted_) {
      report.interrupted = true;
      report.duration_ms = ms_since(started_);
      return report;
    }
    return fail(base.error());
  }
  report.base_snapshot = *base;

  unsigned parallel = options_.parallel ? options_.parallel : plan_.test.parallel ? plan_.test.parallel
                                                                                   : plan_.test.clones;
  parallel = std::clamp(parallel, 1u, static_cast<unsigned>(runs->size()));
  std::mutex mutex;
  size_t next = 0, running = 0, done = 0, failed = 0;
  std::vector<std::optional<RunResult>> results(runs->size());
  auto worker = [&] {
    auto vmm = vmm::VmmClient::connect(vmm_address_, std::chrono::seconds(5));
    // A clone is stopped while the worker forks the next: a stop (QEMU's
    // exit, podfs's unmount, the regions' deletion) is not the test's time.
    // One stop at a time per worker, on a connection of the worker's own.
    auto releaser = vmm::VmmClient::connect(vmm_address_, std::chrono::seconds(5));
    if (!releaser) vmm = fail(releaser.error());
    std::future<void> releasing;
    std::unique_lock lock(mutex);
    while (!interrupted_ && next < runs->size()) {
      size_t index = next++;
      ++running;
      auto counts = std::tuple{running, done, failed};
      lock.unlock();
      progress("runs", runs->size(), std::get<0>(counts), std::get<1>(counts), std::get<2>(counts));
      RunResult result;
      if (vmm) {
        result = run_one(**vmm, (*runs)[index], *base, *code_image);
        if (releasing.valid()) releasing.get();
        releasing = std::async(std::launch::async,
                               [this, &releaser, clone = result.clone, kept = result.kept] {
                                 release_clone(**releaser, clone, kept);
                               });
      } else {
        result.spec = (*runs)[index];
        result.judgement = {Verdict::kError, vmm.error().message()};
      }
      lock.lock();
      --running;
      // A run cut short by an interrupt says nothing about the code.
      if (interrupted_ && result.judgement.verdict != Verdict::kPassed) continue;
      ++done;
      if (result.judgement.verdict != Verdict::kPassed) ++failed;
      results[index] = std::move(result);
      counts = std::tuple{running, done, failed};
      lock.unlock();
      progress("runs", runs->size(), std::get<0>(counts), std::get<1>(counts), std::get<2>(counts));
      lock.lock();
    }
    lock.unlock();
    if (releasing.valid()) releasing.get();
  };
  std::vector<std::thread> workers;
  for (unsigned i = 0; i < parallel; ++i) workers.emplace_back(worker);
  for (auto& thread : workers) thread.join();

  for (auto& result : results) {
    if (result) report.runs.push_back(std::move(*result));
  }
  report.interrupted = interrupted_ || report.runs.size() != runs->size();
  report.duration_ms = ms_since(started_);
  VMPOD_TRY_CTX(write_file_atomically(report_path(options_.state_dir, session_), report_json(report)), "report");
  return report;
}

Result<RunResult> StressRunner::rerun(const StressReport& earlier, const std::string& run) {
  auto found = std::find_if(earlier.runs.begin(), earlier.runs.end(),
                            [&](const RunResult& result) { return result.spec.id == run; });
  if (found == earlier.runs.end()) return fail(ErrorCode::kNotFound, "the report has no run " + run);
  auto vmm = vmm::VmmClient::connect(vmm_address_, std::chrono::seconds(5));
  if (!vmm) return fail(vmm.error());
  if (!(*vmm)->snapshot(earlier.base_snapshot)) {
    return fail(ErrorCode::kNotFound, "base snapshot " + earlier.base_snapshot + " is gone from this vmm");
  }
  started_ = Clock::now();
  std::error_code ec;
  std::filesystem::create_directories(session_dir_, ec);
  RunResult again = run_one(**vmm, found->spec, earlier.base_snapshot, earlier.code_image);
  release_clone(**vmm, again.clone, again.kept);
  return again;
}

Result<vmm::VmRecord> replay_failure(vmm::VmmClient& vmm, const RunResult& run) {
  if (run.failure_snapshot.empty()) {
    return fail(ErrorCode::kNotFound, "run " + run.spec.id + " has no failure snapshot (" +
                                          (run.judgement.verdict == Verdict::kPassed ? "it passed"
                                                                                     : "its clone could not be saved") +
                                          ")");
  }
  vmm::ForkRequest fork;
  fork.snapshot = run.failure_snapshot;
  fork.name_prefix = run.failure_snapshot + "-replay";
  auto clones = vmm.fork_snapshot(fork);
  if (!clones) return fail(clones.error().context("replay " + run.spec.id));
  return clones->front();
}

}  // namespace vmpod::stress
