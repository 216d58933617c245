#include "vm_endpoint.h"

#include <spdlog/spdlog.h>

namespace vmpod::vmm {

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(5);
// Long enough for QEMU's slowest synchronous commands (savevm, dumps).
constexpr auto kCommandTimeout = std::chrono::seconds(120);
constexpr auto kIdlePoll = std::chrono::milliseconds(20);

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

Result<std::unique_ptr<VmEndpoint>> VmEndpoint::start(const std::string& vm, const net::SocketAddress& address) {
  std::unique_ptr<VmEndpoint> endpoint(new VmEndpoint(vm));
  qmp::Greeting greeting;
  greeting.package = "vmpod " VMPOD_VERSION;
  auto server = qmp::QmpServer::start(address, greeting, *endpoint);
  if (!server) return fail(server.error().context("qmp endpoint of " + vm));
  endpoint->server_ = std::move(*server);
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
  server_->stop();
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
  if (replaced) {
    server_->emit_event("X_VMPOD_BACKEND_CHANGED",
                        {{"compute-pod", compute_pod}, {"qemu-pid", runtime.qemu_pid}});
  }
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
  server_->emit_event("X_VMPOD_BACKEND_GONE", {{"reason", reason}});
}

void VmEndpoint::state_changed(std::string_view state, const std::string& reason) {
  server_->emit_event("X_VMPOD_VM_STATE", {{"state", state}, {"reason", reason}});
}

// Runs on the QMP server's thread: queue for the worker, never block here.
void VmEndpoint::dispatch(const qmp::Request& request, qmp::Completion done) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(Task{request, std::move(done)});
  }
  wake_.notify_all();
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
  server_->set_greeting(greeting_of(qemu_->greeting()));
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
    if (event->contains("data")) server_->emit_event(name, (*event)["data"]);
    else server_->emit_event(name);
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
    if (task) task->done(forward(task->request));
    forward_events();
  }
  // Whatever is still queued gets an answer, not silence.
  std::lock_guard lock(mutex_);
  for (auto& task : tasks_) task.done(qmp::qmp_fail(qmp::ErrorClass::kGenericError, "the vmm is stopping"));
  tasks_.clear();
}

}  // namespace vmpod::vmm
