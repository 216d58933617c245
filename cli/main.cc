// vmpod: one binary, a verb per daemon and per user action.
#include <cstdio>

#include "cli.h"

namespace {

struct VerbGroup {
  void (*add)(CLI::App&, vmpod::cli::Outcome&);
};

// One explicit table: no static registration for the linker to drop.
constexpr VerbGroup kVerbGroups[] = {
    {vmpod::cli::add_run_verb},
    {vmpod::cli::add_vm_verbs},
    {vmpod::cli::add_stress_verbs},
    {vmpod::cli::add_libvirt_verbs},
    {vmpod::cli::add_daemon_verbs},
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmpod: a disaggregated virtual machine monitor built on QEMU", "vmpod"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "vmpod " VMPOD_VERSION);
  vmpod::cli::Outcome outcome;
  for (const auto& group : kVerbGroups) group.add(app, outcome);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? 0 : static_cast<int>(vmpod::cli::ExitCode::kUsage);
  }
  if (outcome.guest_exit >= 0 && outcome.code == vmpod::cli::ExitCode::kOk) return outcome.guest_exit;
  return static_cast<int>(outcome.code);
}
