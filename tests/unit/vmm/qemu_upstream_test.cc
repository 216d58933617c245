// QemuUpstream against a real QEMU (-M none, started in a second): commands
// from several threads, more than its window, all get their own replies
// through a QmpServer's event loop, events are passed on, and losing QEMU
// or closing the upstream answers every waiting command, sent or queued.
#include <criterion/criterion.h>

#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <vmpod/base/subprocess.h>
#include <vmpod/qmp/qmp_client.h>
#include <vmpod/qmp/qmp_server.h>

#include "src/qemu_upstream.h"

using namespace vmpod;
using namespace vmpod::vmm;
using namespace std::chrono_literals;

namespace {

// The server is only the event loop here: nobody connects to it.
class NoCommands final : public qmp::Dispatcher {
 public:
  void dispatch(const qmp::Request&, qmp::Completion done) override {
    done(qmp::qmp_fail(qmp::ErrorClass::kCommandNotFound, "none"));
  }
};

struct Fixture {
  std::string dir;
  Subprocess qemu;
  NoCommands commands;
  std::unique_ptr<qmp::QmpServer> loop;
  std::shared_ptr<QemuUpstream> upstream;
  std::mutex mutex;
  std::vector<nlohmann::json> events;
};

std::unique_ptr<Fixture> start() {
  auto f = std::make_unique<Fixture>();
  f->dir = "/tmp/vmpod-upstream-test-" + std::to_string(::getpid());
  std::filesystem::create_directories(f->dir);
  const std::string qmp_path = f->dir + "/qmp.sock";
  auto qemu = Subprocess::spawn({"qemu-system-x86_64", "-M", "none", "-nodefaults", "-display", "none", "-qmp",
                                 "unix:" + qmp_path + ",server=on,wait=off"},
                                f->dir + "/qemu.log", /*die_with_parent=*/true);
  cr_assert(qemu.has_value(), "%s", qemu ? "" : qemu.error().to_string().c_str());
  f->qemu = std::move(*qemu);
  net::SocketAddress address{net::SocketAddress::Kind::kUnix, qmp_path, "", 0};
  std::unique_ptr<qmp::QmpClient> client;
  for (int attempt = 0; attempt < 500 && !client; ++attempt) {
    auto connected = qmp::QmpClient::connect(address, 1s, /*enable_oob=*/true);
    if (connected) client = std::move(*connected);
    else std::this_thread::sleep_for(10ms);
  }
  cr_assert(client != nullptr, "qemu's monitor never came up");
  auto loop = qmp::QmpServer::start({net::SocketAddress::Kind::kUnix, f->dir + "/loop.sock", "", 0}, {}, f->commands);
  cr_assert(loop.has_value());
  f->loop = std::move(*loop);
  auto connection = qmp::QmpClient::release(std::move(client));
  const int fd = connection.fd.get();
  Fixture* raw = f.get();
  f->upstream = std::make_shared<QemuUpstream>(
      std::move(connection),
      [raw](nlohmann::json event) {
        std::lock_guard lock(raw->mutex);
        raw->events.push_back(std::move(event));
      },
      [raw, fd](uint32_t events) { raw->loop->set_watch_events(fd, events); });
  auto upstream = f->upstream;
  auto watched = f->loop->watch(fd, EPOLLIN, [raw, upstream](uint32_t events) {
    if (!upstream->on_ready(events)) raw->loop->unwatch(upstream->fd());
  });
  cr_assert(watched.has_value());
  return f;
}

qmp::Request request(const std::string& command, nlohmann::json arguments = nlohmann::json::object()) {
  qmp::Request out;
  out.command = command;
  out.arguments = std::move(arguments);
  return out;
}

void finish(Fixture& f) {
  f.loop->unwatch(f.upstream->fd());
  f.upstream->close("test over");
  f.loop->stop();
  std::filesystem::remove_all(f.dir);
}

}  // namespace

Test(qemu_upstream, every_command_gets_its_own_reply_from_many_threads, .timeout = 60) {
  auto f = start();
  constexpr int kThreads = 4, kEach = 50;
  std::atomic<int> right{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::future<qmp::Reply>> replies;
      for (int i = 0; i < kEach; ++i) {
        auto promise = std::make_shared<std::promise<qmp::Reply>>();
        replies.push_back(promise->get_future());
        // Alternate commands whose answers tell them apart.
        auto command = (i % 2 == 0) ? request("query-status") : request("query-name");
        f->upstream->send(command, [promise](qmp::Reply reply) { promise->set_value(std::move(reply)); });
      }
      for (int i = 0; i < kEach; ++i) {
        if (replies[i].wait_for(20s) != std::future_status::ready) {
          ++wrong;
          continue;
        }
        qmp::Reply reply = replies[i].get();
        bool ok = reply.has_value() && ((i % 2 == 0) ? reply->contains("status") : !reply->contains("status"));
        ok ? ++right : ++wrong;
      }
      (void)t;
    });
  }
  for (auto& thread : threads) thread.join();
  cr_expect_eq(right.load(), kThreads * kEach);
  cr_expect_eq(wrong.load(), 0);

  // QEMU's errors come back as QEMU's.
  std::promise<qmp::Reply> promise;
  f->upstream->send(request("no-such-command"), [&](qmp::Reply reply) { promise.set_value(std::move(reply)); });
  qmp::Reply error = promise.get_future().get();
  cr_assert(!error.has_value());
  cr_expect_eq(error.error().error_class, qmp::ErrorClass::kCommandNotFound);
  cr_expect_str_eq(error.error().desc.c_str(), "The command no-such-command has not been found");
  finish(*f);
}

Test(qemu_upstream, events_are_passed_on, .timeout = 60) {
  auto f = start();
  std::promise<qmp::Reply> promise;
  f->upstream->send(request("stop"), [&](qmp::Reply reply) { promise.set_value(std::move(reply)); });
  cr_assert(promise.get_future().get().has_value());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  bool seen = false;
  while (!seen && std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(f->mutex);
      for (const auto& event : f->events) seen = seen || event.value("event", "") == "STOP";
    }
    std::this_thread::sleep_for(10ms);
  }
  cr_expect(seen, "no STOP event");
  finish(*f);
}

Test(qemu_upstream, losing_qemu_answers_every_waiting_command, .timeout = 60) {
  auto f = start();
  // More than the window: some are with QEMU, some wait here. QEMU is
  // stopped first, so that none of them can be answered.
  f->qemu.kill(SIGSTOP);
  std::vector<std::future<qmp::Reply>> replies;
  for (size_t i = 0; i < QemuUpstream::kInFlight * 3; ++i) {
    auto promise = std::make_shared<std::promise<qmp::Reply>>();
    replies.push_back(promise->get_future());
    f->upstream->send(request("query-status"), [promise](qmp::Reply reply) { promise->set_value(std::move(reply)); });
  }
  f->qemu.kill(SIGKILL);
  for (auto& reply : replies) {
    cr_assert_eq(reply.wait_for(20s), std::future_status::ready, "a command was left waiting");
    qmp::Reply got = reply.get();
    cr_assert(!got.has_value());
    cr_expect(got.error().desc.find("lost the VM's QEMU") == 0, "%s", got.error().desc.c_str());
  }
  cr_expect(f->upstream->closed());
  // Once closed, a command fails at once.
  std::promise<qmp::Reply> late;
  f->upstream->send(request("query-status"), [&](qmp::Reply reply) { late.set_value(std::move(reply)); });
  cr_expect_eq(late.get_future().wait_for(0s), std::future_status::ready);
  finish(*f);
}

Test(qemu_upstream, close_answers_every_waiting_command, .timeout = 60) {
  auto f = start();
  f->qemu.kill(SIGSTOP);
  std::vector<std::future<qmp::Reply>> replies;
  for (int i = 0; i < 10; ++i) {
    auto promise = std::make_shared<std::promise<qmp::Reply>>();
    replies.push_back(promise->get_future());
    f->upstream->send(request("query-status"), [promise](qmp::Reply reply) { promise->set_value(std::move(reply)); });
  }
  f->upstream->close("the VM's QEMU was replaced");
  for (auto& reply : replies) {
    cr_assert_eq(reply.wait_for(0s), std::future_status::ready);
    qmp::Reply got = reply.get();
    cr_assert(!got.has_value());
    cr_expect_str_eq(got.error().desc.c_str(), "the VM's QEMU was replaced");
  }
  f->qemu.kill(SIGCONT);
  finish(*f);
}
