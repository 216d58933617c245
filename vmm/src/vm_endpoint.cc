#include "vm_endpoint.h"

#include <sys/epoll.h>

#include <future>

#include <spdlog/spdlog.h>

#include <vmpod/qmp/qapi.h>

#include "vm_hmp.h"

namespace vmpod::vmm {

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(5);
// An HMP line waits behind the commands queued before it; QEMU's slowest
// synchronous commands (savevm, dumps) take about this long.
constexpr auto kHmpTimeout = std::chrono::seconds(130);

qmp::Greeting greeting_of(const nlohmann::json& qemu_greeting) {
  qmp::Greeting greeting;
  const nlohmann::json& version = qemu_greeting.value("QMP", nlohmann::json::object()).value("version", nlohmann::json::object());
  const nlohmann::json& qemu = version.value("qemu", nlohmann::json::object());
  greeting.major = qemu.value("major", 0);
  greeting.minor = qemu.value("minor", 0);
  greeting.micro = qemu.value("micro", 0);
  greeting.package = version.value("package", std::string()) + " vmpod " VMPOD_VERSION;
  return greeting;
}

std::string hmp_command_line(const qmp::Request& request) {
  if (request.command != "human-monitor-command") return {};
  auto line = request.arguments.find("command-line");
  return line != request.arguments.end() && line->is_string() ? line->get<std::string>() : std::string();
}

}  // namespace

Result<std::unique_ptr<VmEndpoint>> VmEndpoint::start(const std::string& vm, const Addresses& addresses,
                                                      std::unique_ptr<qapi::Commands> commands,
                                                      QemuEventListener on_qemu_event) {
  std::unique_ptr<VmEndpoint> endpoint(new VmEndpoint(vm, std::move(commands), std::move(on_qemu_event)));
  qmp::Greeting greeting;
  greeting.package = "vmpod " VMPOD_VERSION;
  std::vector<net::SocketAddress> qmp_addresses{addresses.qmp};
  if (addresses.qmp_tcp) qmp_addresses.push_back(*addresses.qmp_tcp);
  for (const auto& address : qmp_addresses) {
    auto server = qmp::QmpServer::start(address, greeting, *endpoint);
    if (!server) return fail(server.error().context("qmp endpoint of " + vm));
    endpoint->servers_.push_back(std::move(*server));
  }
  auto hmp = qmp::HmpServer::start(
      addresses.hmp, "QEMU monitor of vmpod vm " + vm + " - type 'help' for more information",
      [raw = endpoint.get()](const std::string& line) { return raw->run_hmp_line(line); });
  if (!hmp) return fail(hmp.error().context("hmp monitor of " + vm));
  endpoint->hmp_ = std::move(*hmp);
  endpoint->worker_ = std::thread([raw = endpoint.get()] { raw->run(); });
  return endpoint;
}

VmEndpoint::~VmEndpoint() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  worker_.join();
  drop_upstream("the vmm is stopping");
  // HMP clients waiting on a command have had their answer by now.
  hmp_->stop();
  for (auto& server : servers_) server->stop();
}

std::optional<net::SocketAddress> VmEndpoint::tcp_address() const {
  if (servers_.size() < 2) return std::nullopt;
  return servers_[1]->address();
}

template <typename Emit>
void VmEndpoint::to_every_server(Emit emit) {
  for (auto& server : servers_) emit(*server);
}

void VmEndpoint::attach(const cpuserver::GuestRuntime& runtime, const std::string& compute_pod) {
  bool replaced;
  {
    std::lock_guard lock(mutex_);
    replaced = backend_.has_value() || backend_generation_ > 0;
    backend_ = Backend{runtime.paths.vmm_qmp_socket, compute_pod, runtime.qemu_pid};
    ++backend_generation_;
  }
  drop_upstream("the VM's QEMU was replaced");
  wake_.notify_all();  // the worker connects to the new QEMU
  if (!replaced) return;
  const qapi::XVmpodBackendChangedData data{compute_pod, runtime.qemu_pid};
  to_every_server([&](qmp::QmpServer& server) { qapi::emit_x_vmpod_backend_changed(server, data); });
}

void VmEndpoint::detach(const std::string& reason) {
  {
    std::lock_guard lock(mutex_);
    if (!backend_) return;
    backend_.reset();
    detached_reason_ = reason;
    ++backend_generation_;
  }
  drop_upstream("the VM's QEMU is gone: " + reason);
  wake_.notify_all();
  const qapi::XVmpodBackendGoneData data{reason};
  to_every_server([&](qmp::QmpServer& server) { qapi::emit_x_vmpod_backend_gone(server, data); });
}

void VmEndpoint::state_changed(VmState state, const std::string& reason) {
  qapi::XVmpodVmStateData data{schema_vm_state(state), std::nullopt};
  if (!reason.empty()) data.reason = reason;
  to_every_server([&](qmp::QmpServer& server) { qapi::emit_x_vmpod_vm_state(server, data); });
}

bool VmEndpoint::runs_on_worker(const qmp::Request& request) const {
  if (qapi::is_command(request.command)) return true;
  return request.command == "human-monitor-command" &&
         classify_hmp(hmp_command_line(request)) == HmpLine::kVmpod;
}

// On a QMP server's thread: QEMU's commands go out at once; the rest, or
// all while QEMU is not connected, wait for the worker. Never blocks.
void VmEndpoint::dispatch(const qmp::Request& request, qmp::Completion done) {
  if (!runs_on_worker(request)) {
    if (auto upstream = ready_upstream()) return forward(*upstream, request, std::move(done));
  }
  enqueue(Task{request, std::move(done)});
}

void VmEndpoint::enqueue(Task task) {
  bool queued = false;
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      tasks_.push_back(std::move(task));
      queued = true;
    }
  }
  if (!queued) return task.done(qmp::qmp_fail(qmp::ErrorClass::kGenericError, "the vmm is stopping"));
  wake_.notify_all();
}

// On the HMP client's thread, which may wait.
std::string VmEndpoint::run_hmp_line(const std::string& line) {
  auto answer = std::make_shared<std::promise<qmp::Reply>>();
  std::future<qmp::Reply> reply = answer->get_future();
  qmp::Request request;
  request.command = "human-monitor-command";
  request.arguments = {{"command-line", line}};
  enqueue(Task{request, [answer](qmp::Reply result) { answer->set_value(std::move(result)); }});
  if (reply.wait_for(kHmpTimeout) != std::future_status::ready) return "Error: no answer from the vm's QEMU\n";
  qmp::Reply result = reply.get();
  if (!result) return "Error: " + result.error().desc + "\n";
  return result->is_string() ? result->get<std::string>() : std::string();
}

void VmEndpoint::execute(const qmp::Request& request, Done done) {
  if (qapi::is_command(request.command)) return done(qapi::dispatch(*commands_, request));
  const std::string line = hmp_command_line(request);
  if (request.command == "human-monitor-command" && classify_hmp(line) == HmpLine::kVmpod) {
    return done(run_vmpod_hmp(*commands_, line));
  }
  connect_backend();
  if (auto upstream = ready_upstream()) return forward(*upstream, request, std::move(done));
  std::lock_guard lock(mutex_);
  done(qmp::qmp_fail(qmp::ErrorClass::kGenericError,
                     "vm '" + vm_ + "' has no running QEMU: " + (backend_ ? "unreachable" : detached_reason_)));
}

void VmEndpoint::forward(QemuUpstream& upstream, const qmp::Request& request, Done done) {
  if (request.command == "query-qmp-schema") {
    return upstream.send(request, [done = std::move(done)](qmp::Reply reply) {
      if (reply) reply = qmp::merge_schema(*reply, qapi::introspection());
      done(std::move(reply));
    });
  }
  if (request.command == "query-commands") {
    return upstream.send(request, [done = std::move(done)](qmp::Reply reply) {
      if (reply && reply->is_array()) {
        for (const std::string& name : qapi::command_names()) reply->push_back({{"name", name}});
      }
      done(std::move(reply));
    });
  }
  if (classify_hmp(hmp_command_line(request)) == HmpLine::kHelp && request.command == "human-monitor-command") {
    return upstream.send(request, [done = std::move(done)](qmp::Reply reply) {
      if (reply) reply = (reply->is_string() ? reply->get<std::string>() : std::string()) + vmpod_hmp_help();
      done(std::move(reply));
    });
  }
  upstream.send(request, std::move(done));
}

std::shared_ptr<QemuUpstream> VmEndpoint::ready_upstream() {
  std::lock_guard lock(mutex_);
  if (!upstream_ || upstream_generation_ != backend_generation_ || upstream_->closed()) return nullptr;
  return upstream_;
}

void VmEndpoint::drop_upstream(const std::string& reason) {
  std::shared_ptr<QemuUpstream> old;
  {
    std::lock_guard lock(mutex_);
    old = std::move(upstream_);
  }
  if (!old) return;
  servers_.front()->unwatch(old->fd());
  old->close(reason);
}

void VmEndpoint::connect_backend() {
  std::optional<Backend> backend;
  uint64_t generation;
  {
    std::lock_guard lock(mutex_);
    if (upstream_ && upstream_generation_ == backend_generation_ && !upstream_->closed()) return;
    backend = backend_;
    generation = backend_generation_;
    attempted_generation_ = generation;
  }
  drop_upstream("reconnecting to the VM's QEMU");
  if (!backend) return;
  net::SocketAddress address{net::SocketAddress::Kind::kUnix, backend->qmp_socket, "", 0};
  auto client = qmp::QmpClient::connect(address, kConnectTimeout, /*enable_oob=*/true);
  if (!client) {
    // Tried again on the next command.
    spdlog::warn("{}: qmp endpoint cannot reach qemu: {}", vm_, client.error().to_string());
    return;
  }
  const qmp::Greeting greeting = greeting_of((*client)->greeting());
  for (auto& server : servers_) server->set_greeting(greeting);
  // The first QMP server's event loop reads QEMU's replies and events.
  qmp::QmpServer& loop = *servers_.front();
  qmp::QmpClient::Connection connection = qmp::QmpClient::release(std::move(*client));
  const int fd = connection.fd.get();
  auto upstream = std::make_shared<QemuUpstream>(
      std::move(connection), [this](nlohmann::json event) { forward_event(event); },
      [&loop, fd](uint32_t events) { loop.set_watch_events(fd, events); });
  for (const auto& event : upstream->take_early_events()) forward_event(event);
  auto watched = loop.watch(fd, EPOLLIN, [&loop, upstream](uint32_t events) {
    if (!upstream->on_ready(events)) loop.unwatch(upstream->fd());
  });
  if (!watched) {
    spdlog::error("{}: qmp endpoint cannot watch qemu's monitor: {}", vm_, watched.error().to_string());
    upstream->close("the endpoint cannot watch the VM's QEMU");
    return;
  }
  std::lock_guard lock(mutex_);
  upstream_ = std::move(upstream);
  upstream_generation_ = generation;
}

void VmEndpoint::forward_event(const nlohmann::json& event) {
  const std::string name = event.value("event", "");
  if (event.contains("data")) {
    to_every_server([&](qmp::QmpServer& server) { server.emit_event(name, event["data"]); });
  } else {
    to_every_server([&](qmp::QmpServer& server) { server.emit_event(name); });
  }
  {
    std::lock_guard lock(mutex_);
    qemu_events_.push_back(name);
  }
  wake_.notify_all();
}

void VmEndpoint::run() {
  while (true) {
    std::optional<Task> task;
    std::deque<std::string> events;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] {
        // A new backend is connected to at once; a failed attempt is
        // retried by the next command.
        return stopping_ || !tasks_.empty() || !qemu_events_.empty() ||
               (backend_ && attempted_generation_ != backend_generation_);
      });
      if (stopping_) break;
      events.swap(qemu_events_);
      if (!tasks_.empty()) {
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
    }
    for (const auto& name : events) on_qemu_event_(name);
    connect_backend();
    if (task) execute(task->request, std::move(task->done));
  }
  // Whatever is still queued gets an answer, not silence.
  std::lock_guard lock(mutex_);
  for (auto& task : tasks_) task.done(qmp::qmp_fail(qmp::ErrorClass::kGenericError, "the vmm is stopping"));
  tasks_.clear();
}

}  // namespace vmpod::vmm
