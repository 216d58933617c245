#include "qemu_upstream.h"

#include <sys/epoll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace vmpod::vmm {

namespace {

constexpr size_t kReadChunk = 64 * 1024;

qmp::Reply reply_from(const nlohmann::json& message) {
  if (const auto error = message.find("error"); error != message.end()) {
    auto error_class = qmp::parse_error_class(error->value("class", "GenericError"));
    return qmp::qmp_fail(error_class.value_or(qmp::ErrorClass::kGenericError), error->value("desc", ""));
  }
  return message.value("return", nlohmann::json::object());
}

}  // namespace

QemuUpstream::QemuUpstream(qmp::QmpClient::Connection connection, EventHandler on_event,
                           InterestHandler on_interest)
    : fd_(std::move(connection.fd)),
      on_event_(std::move(on_event)),
      on_interest_(std::move(on_interest)),
      streamer_(std::move(connection.streamer)),
      early_events_(std::move(connection.events)),
      interest_(EPOLLIN) {}

std::deque<nlohmann::json> QemuUpstream::take_early_events() {
  std::lock_guard lock(mutex_);
  return std::exchange(early_events_, {});
}

void QemuUpstream::send(const qmp::Request& request, Done done) {
  std::string reason;
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      const uint64_t id = next_id_++;
      nlohmann::json command = {{request.oob ? "exec-oob" : "execute", request.command},
                                {"arguments", request.arguments},
                                {"id", id}};
      Pending pending{qmp::qmp_json_text(command) + "\r\n", request.oob, std::move(done)};
      if (pending.oob) {
        // Out of band: past the queue, as QEMU takes it.
        output_ += pending.line;
        sent_.emplace(id, std::move(pending));
      } else {
        queued_.emplace_back(id, std::move(pending));
      }
      pump_locked();
      return;
    }
    reason = closed_reason_;
  }
  done(qmp::qmp_fail(qmp::ErrorClass::kGenericError, reason));
}

void QemuUpstream::pump_locked() {
  while (!queued_.empty() && in_band_sent_ < kInFlight) {
    auto [id, pending] = std::move(queued_.front());
    queued_.pop_front();
    output_ += pending.line;
    ++in_band_sent_;
    sent_.emplace(id, std::move(pending));
  }
  while (!output_.empty()) {
    ssize_t wrote = ::send(fd_.get(), output_.data(), output_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (wrote > 0) {
      output_.erase(0, static_cast<size_t>(wrote));
    } else if (wrote < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // EAGAIN waits for EPOLLOUT; an error shows as EPOLLERR/EPOLLHUP
    }
  }
  const uint32_t interest = output_.empty() ? EPOLLIN : (EPOLLIN | EPOLLOUT);
  if (interest != interest_) {
    interest_ = interest;
    on_interest_(interest);
  }
}

bool QemuUpstream::on_ready(uint32_t events) {
  std::vector<std::pair<Done, qmp::Reply>> completions;
  std::vector<nlohmann::json> qemu_events;
  bool open = true;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    std::string lost;
    if (events & EPOLLIN) {
      char buffer[kReadChunk];
      ssize_t got = ::recv(fd_.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
      if (got == 0) {
        lost = "the VM's QEMU closed its monitor";
      } else if (got < 0 && errno != EAGAIN && errno != EINTR) {
        lost = fmt::format("reading the VM's QEMU monitor: {}", std::strerror(errno));
      } else if (got > 0) {
        std::vector<qmp::JsonInput> inputs;
        streamer_.feed(std::string_view(buffer, static_cast<size_t>(got)), inputs);
        for (auto& input : inputs) {
          auto* message = std::get_if<nlohmann::json>(&input);
          if (message == nullptr) {
            lost = "the VM's QEMU sent what is not JSON: " + std::get<qmp::JsonParseError>(input).desc;
            break;
          }
          if (message->contains("event")) {
            qemu_events.push_back(std::move(*message));
            continue;
          }
          const nlohmann::json id = message->value("id", nlohmann::json());
          auto found = id.is_number_integer() ? sent_.find(id.get<uint64_t>()) : sent_.end();
          if (found == sent_.end()) {
            spdlog::warn("qmp upstream: a reply nobody is waiting for: {}", message->dump());
            continue;
          }
          if (!found->second.oob) --in_band_sent_;
          completions.emplace_back(std::move(found->second.done), reply_from(*message));
          sent_.erase(found);
        }
      }
    } else if (events & (EPOLLERR | EPOLLHUP)) {
      lost = "the VM's QEMU monitor hung up";
    }
    if (lost.empty()) {
      pump_locked();
    } else {
      auto failed = fail_all_locked("lost the VM's QEMU: " + lost);
      completions.insert(completions.end(), std::make_move_iterator(failed.begin()),
                         std::make_move_iterator(failed.end()));
      open = false;
    }
  }
  for (auto& event : qemu_events) on_event_(std::move(event));
  for (auto& [done, reply] : completions) done(std::move(reply));
  return open;
}

std::vector<std::pair<QemuUpstream::Done, qmp::Reply>> QemuUpstream::fail_all_locked(const std::string& reason) {
  std::vector<std::pair<Done, qmp::Reply>> failed;
  closed_ = true;
  closed_reason_ = reason;
  for (auto& [id, pending] : sent_) {
    failed.emplace_back(std::move(pending.done), qmp::qmp_fail(qmp::ErrorClass::kGenericError, reason));
  }
  for (auto& [id, pending] : queued_) {
    failed.emplace_back(std::move(pending.done), qmp::qmp_fail(qmp::ErrorClass::kGenericError, reason));
  }
  sent_.clear();
  queued_.clear();
  output_.clear();
  return failed;
}

void QemuUpstream::close(const std::string& reason) {
  std::vector<std::pair<Done, qmp::Reply>> failed;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    failed = fail_all_locked(reason);
  }
  for (auto& [done, reply] : failed) done(std::move(reply));
}

bool QemuUpstream::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

}  // namespace vmpod::vmm
