// Verbs that talk to a VM's monitors through its QMP endpoint, as a QMP
// client would: qmp (commands), hmp (human monitor lines, through
// human-monitor-command), events (follows the event stream).
#include <cstdio>
#include <ctime>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vmpod/qmp/qmp_client.h>
#include <vmpod/vmm/vmm.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

constexpr auto kCommandTimeout = std::chrono::seconds(120);

struct MonitorFlags {
  std::string vmm;
  std::string vm;
  std::string command;
  bool json = false;
  unsigned count = 0;    // events: stop after this many (0: never)
  unsigned timeout = 0;  // events: stop after this many seconds (0: never)
};

Result<std::unique_ptr<qmp::QmpClient>> connect_endpoint(const MonitorFlags& flags) {
  auto vmm_client = connect_vmm(flags.vmm);
  if (!vmm_client) return fail(vmm_client.error());
  auto vm = (*vmm_client)->vm(flags.vm);
  if (!vm) return fail(vm.error());
  net::SocketAddress endpoint{net::SocketAddress::Kind::kUnix, vm->qmp_endpoint, "", 0};
  return qmp::QmpClient::connect(endpoint, std::chrono::seconds(5));
}

// Runs `body` on the argument, else on each non-blank line of stdin (as
// qmp-shell and a monitor take them); exit 1 if any of them failed.
template <typename Body>
ExitCode each_command(const std::string& argument, Body body) {
  bool failed = false;
  if (!argument.empty()) {
    ExitCode code = body(argument, failed);
    return code != ExitCode::kOk ? code : failed ? ExitCode::kFailure : ExitCode::kOk;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    ExitCode code = body(line, failed);
    if (code != ExitCode::kOk && code != ExitCode::kUsage) return code;
  }
  return failed ? ExitCode::kFailure : ExitCode::kOk;
}

void print_error_reply(const nlohmann::json& reply) {
  std::printf("error: %s: %s\n", reply["error"].value("class", "").c_str(), reply["error"].value("desc", "").c_str());
}

// One QMP exchange: a JSON command, or a bare command name; the reply
// printed whole (--json) or as its return value.
ExitCode qmp_command(qmp::QmpClient& client, const std::string& text, bool json, bool& failed) {
  nlohmann::json request = nlohmann::json::parse(text, nullptr, false);
  if (request.is_discarded()) {
    if (text.find_first_of("{}[]\" ") != std::string::npos) {
      std::fprintf(stderr, "vmpod: not a QMP command: %s\n", text.c_str());
      failed = true;
      return ExitCode::kUsage;
    }
    request = {{"execute", text}};
  }
  auto reply = client.execute_raw(request, kCommandTimeout);
  if (!reply) return report(reply.error());
  if (json) {
    std::printf("%s\n", reply->dump().c_str());
  } else if (reply->contains("error")) {
    print_error_reply(*reply);
  } else {
    std::printf("%s\n", reply->value("return", nlohmann::json::object()).dump(2).c_str());
  }
  if (reply->contains("error")) failed = true;
  std::fflush(stdout);
  return ExitCode::kOk;
}

// One HMP line through human-monitor-command: its text, as the monitor
// prints it (--json: the QMP reply).
ExitCode hmp_command(qmp::QmpClient& client, const std::string& line, bool json, bool& failed) {
  auto reply = client.execute_raw({{"execute", "human-monitor-command"}, {"arguments", {{"command-line", line}}}},
                                  kCommandTimeout);
  if (!reply) return report(reply.error());
  if (json) {
    std::printf("%s\n", reply->dump().c_str());
  } else if (reply->contains("error")) {
    print_error_reply(*reply);
  } else {
    const nlohmann::json& text = (*reply)["return"];
    if (text.is_string()) std::fputs(text.get_ref<const std::string&>().c_str(), stdout);
  }
  if (reply->contains("error")) failed = true;
  std::fflush(stdout);
  return ExitCode::kOk;
}

// "2026-11-25 16:40:51.123456 NAME {data}", in local time.
std::string event_text(const nlohmann::json& event) {
  const nlohmann::json& stamp = event.value("timestamp", nlohmann::json::object());
  std::time_t seconds = stamp.value("seconds", int64_t{0});
  std::tm local{};
  ::localtime_r(&seconds, &local);
  char when[32];
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &local);
  std::string text = fmt::format("{}.{:06} {}", when, stamp.value("microseconds", int64_t{0}),
                                 event.value("event", "?"));
  if (event.contains("data")) text += " " + event["data"].dump();
  return text;
}

ExitCode follow_events(const MonitorFlags& flags) {
  auto client = connect_endpoint(flags);
  if (!client) return report(client.error());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(flags.timeout);
  unsigned seen = 0;
  while (flags.count == 0 || seen < flags.count) {
    if (flags.timeout != 0 && std::chrono::steady_clock::now() >= deadline) break;
    auto event = (*client)->next_event(std::chrono::milliseconds(500));
    if (!event) {
      if ((*client)->connected()) continue;  // nothing within the poll interval
      return report(event.error());
    }
    ++seen;
    std::printf("%s\n", flags.json ? event->dump().c_str() : event_text(*event).c_str());
    std::fflush(stdout);
  }
  return ExitCode::kOk;
}

CLI::App* monitor_verb(CLI::App& app, const char* name, const char* help, const std::shared_ptr<MonitorFlags>& flags) {
  auto* cmd = app.add_subcommand(name, help);
  cmd->add_option("--vmm", flags->vmm, "vmm control socket (default $VMPOD_VMM or unix:/run/vmpod/vmm.sock)");
  cmd->add_option("vm", flags->vm, "VM name")->required();
  return cmd;
}

}  // namespace

void add_monitor_verbs(CLI::App& app, Outcome& outcome) {
  auto qmp_flags = std::make_shared<MonitorFlags>();
  auto* qmp_cmd = monitor_verb(app, "qmp", "Send QMP commands to a VM's endpoint (one argument, or lines on stdin)",
                               qmp_flags);
  qmp_cmd->add_option("command", qmp_flags->command, "a JSON command or a bare command name");
  qmp_cmd->add_flag("--json", qmp_flags->json, "print each reply whole, one per line");
  qmp_cmd->callback([qmp_flags, &outcome] {
    auto client = connect_endpoint(*qmp_flags);
    if (!client) return void(outcome.code = report(client.error()));
    outcome.code = each_command(qmp_flags->command, [&](const std::string& text, bool& failed) {
      return qmp_command(**client, text, qmp_flags->json, failed);
    });
  });

  auto hmp_flags = std::make_shared<MonitorFlags>();
  auto* hmp_cmd = monitor_verb(app, "hmp", "Run human monitor commands on a VM (one argument, or lines on stdin)",
                               hmp_flags);
  hmp_cmd->add_option("command", hmp_flags->command, "an HMP command line, e.g. 'info pods'");
  hmp_cmd->add_flag("--json", hmp_flags->json, "print each QMP reply whole, one per line");
  hmp_cmd->callback([hmp_flags, &outcome] {
    auto client = connect_endpoint(*hmp_flags);
    if (!client) return void(outcome.code = report(client.error()));
    outcome.code = each_command(hmp_flags->command, [&](const std::string& line, bool& failed) {
      return hmp_command(**client, line, hmp_flags->json, failed);
    });
  });

  auto event_flags = std::make_shared<MonitorFlags>();
  auto* events_cmd = monitor_verb(app, "events", "Follow a VM's QMP events (QEMU's and vmpod's)", event_flags);
  events_cmd->add_flag("--json", event_flags->json, "print each event whole, one per line");
  events_cmd->add_option("--count", event_flags->count, "exit after this many events");
  events_cmd->add_option("--timeout", event_flags->timeout, "exit after this many seconds");
  events_cmd->callback([event_flags, &outcome] { outcome.code = follow_events(*event_flags); });
}

}  // namespace vmpod::cli
