#include "vm_endpoint.h"

#include <future>

#include <spdlog/spdlog.h>

#include <vmpod/qmp/qapi.h>

#include "vm_hmp.h"

namespace vmpod::vmm {

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(5);
// Long enough for QEMU's slowest synchronous commands (savevm, dumps).
constexpr auto kCommandTimeout = std::chrono::seconds(120);
constexpr auto kIdlePoll = std::chrono::milliseconds(20);
// An HMP line waits behind the commands queued before it, then runs.
constexpr auto kHmpTimeout = kCommandTimeout + std::chrono::seconds(10);

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
  // HMP clients waiting on the worker have had their answer from run().
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
  wake_.notify_all();
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
  wake_.notify_all();
  const qapi::XVmpodBackendGoneData data{reason};
  to_every_server([&](qmp::QmpServer& server) { qapi::emit_x_vmpod_backend_gone(server, data); });
}

void VmEndpoint::state_changed(VmState state, const std::string& reason) {
  qapi::XVmpodVmStateData data{schema_vm_state(state), std::nullopt};
  if (!reason.empty()) data.reason = reason;
  to_every_server([&](qmp::QmpServer& server) { qapi::emit_x_vmpod_vm_state(server, data); });
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

// Runs on the QMP server's thread: queue for the worker, never block here.
void VmEndpoint::dispatch(const qmp::Request& request, qmp::Completion done) {
  enqueue(Task{request, std::move(done)});
}

// Runs on the HMP client's thread, which may wait.
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

qmp::Reply VmEndpoint::execute(const qmp::Request& request) {
  if (qapi::is_command(request.command)) return qapi::dispatch(*commands_, request);
  if (request.command == "human-monitor-command") return human_monitor_command(request);
  qmp::Reply reply = forward(request);
  if (!reply) return reply;
  if (request.command == "query-qmp-schema") return qmp::merge_schema(*reply, qapi::introspection());
  if (request.command == "query-commands" && reply->is_array()) {
    for (const std::string& name : qapi::command_names()) reply->push_back({{"name", name}});
  }
  return reply;
}

qmp::Reply VmEndpoint::human_monitor_command(const qmp::Request& request) {
  auto line = request.arguments.find("command-line");
  if (line == request.arguments.end() || !line->is_string()) return forward(request);  // QEMU's error
  const std::string& text = line->get_ref<const std::string&>();
  switch (classify_hmp(text)) {
    case HmpLine::kVmpod: return run_vmpod_hmp(*commands_, text);
    case HmpLine::kHelp: {
      qmp::Reply qemu = forward(request);
      if (!qemu) return qemu;
      return (qemu->is_string() ? qemu->get<std::string>() : std::string()) + vmpod_hmp_help();
    }
    case HmpLine::kQemu: break;
  }
  return forward(request);
}

// Keeps the worker's connection to QEMU matching the backend it should use.
void VmEndpoint::connect_backend() {
  std::optional<Backend> backend;
  uint64_t generation;
  {
    std::lock_guard lock(mutex_);
    backend = backend_;
    generation = backend_generation_;
  }
  if (generation == connected_generation_ && (qemu_ || !backend)) return;
  qemu_.reset();
  connected_generation_ = generation;
  if (!backend) return;
  net::SocketAddress address{net::SocketAddress::Kind::kUnix, backend->qmp_socket, "", 0};
  auto client = qmp::QmpClient::connect(address, kConnectTimeout, /*enable_oob=*/true);
  if (!client) {
    spdlog::warn("{}: qmp endpoint cannot reach qemu: {}", vm_, client.error().to_string());
    // Try again on the next command.
    connected_generation_ = generation - 1;
    return;
  }
  qemu_ = std::move(*client);
  const qmp::Greeting greeting = greeting_of(qemu_->greeting());
  for (auto& server : servers_) server->set_greeting(greeting);
}

qmp::Reply VmEndpoint::forward(const qmp::Request& request) {
  connect_backend();
  if (!qemu_) {
    std::lock_guard lock(mutex_);
    return qmp::qmp_fail(qmp::ErrorClass::kGenericError,
                         "vm '" + vm_ + "' has no running QEMU: " + (backend_ ? "unreachable" : detached_reason_));
  }
  nlohmann::json command = {{request.oob ? "exec-oob" : "execute", request.command},
                            {"arguments", request.arguments},
                            {"id", next_forward_id_++}};
  auto reply = qemu_->execute_raw(command, kCommandTimeout);
  if (!reply) {
    qemu_.reset();
    return qmp::qmp_fail(qmp::ErrorClass::kGenericError, "lost the VM's QEMU: " + reply.error().message());
  }
  if (reply->contains("error")) {
    const nlohmann::json& error = (*reply)["error"];
    auto error_class = qmp::parse_error_class(error.value("class", "GenericError"));
    return qmp::qmp_fail(error_class.value_or(qmp::ErrorClass::kGenericError), error.value("desc", ""));
  }
  return reply->value("return", nlohmann::json::object());
}

// No event now, or a connection that closed, ends the loop; a closed
// connection shows on the next command.
void VmEndpoint::forward_events() {
  while (qemu_) {
    auto event = qemu_->next_event(std::chrono::milliseconds(0));
    if (!event) return;
    std::string name = event->value("event", "");
    if (event->contains("data")) {
      to_every_server([&](qmp::QmpServer& server) { server.emit_event(name, (*event)["data"]); });
    } else {
      to_every_server([&](qmp::QmpServer& server) { server.emit_event(name); });
    }
    on_qemu_event_(name);
  }
}

void VmEndpoint::run() {
  while (true) {
    std::optional<Task> task;
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, kIdlePoll, [&] { return stopping_ || !tasks_.empty(); });
      if (stopping_) break;
      if (!tasks_.empty()) {
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
    }
    connect_backend();
    if (task) task->done(execute(task->request));
    forward_events();
  }
  // Whatever is still queued gets an answer, not silence.
  std::lock_guard lock(mutex_);
  for (auto& task : tasks_) task.done(qmp::qmp_fail(qmp::ErrorClass::kGenericError, "the vmm is stopping"));
  tasks_.clear();
}

}  // namespace vmpod::vmm
