// `vmpod libvirt`: libvirt's QEMU driver with guest RAM in memory pods.
// install/uninstall edit qemu.conf; backing serves the podfs that libvirt
// uses as its memory backing directory, until SIGINT or SIGTERM.
#include <cstdio>

#include <vmpod/base/units.h>
#include <vmpod/libvirt/qemu_conf.h>
#include <vmpod/libvirt/ram_backing.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

struct InstallFlags {
  std::string qemu_conf = std::string(libvirt::kQemuConfPath);
  std::string memory_backing_dir = std::string(libvirt::kDefaultRamBackingDir);
};

struct BackingFlags {
  std::string dir = std::string(libvirt::kDefaultRamBackingDir);
  std::vector<std::string> memory_pods;
  std::string provider = "tcp";
  std::string fabric_node = "127.0.0.1";
  std::string stripe = "1M";
  std::string local_cache = "0";
  bool verbose = false;
};

Result<std::unique_ptr<cpuserver::Podfs>> start_backing(const BackingFlags& flags) {
  libvirt::RamBackingConfig config;
  config.dir = flags.dir;
  if (flags.memory_pods.empty()) return fail(ErrorCode::kInvalidArgument, "give at least one --memory-pod");
  for (const auto& text : flags.memory_pods) {
    auto address = net::parse_socket_address(text);
    if (!address) return fail(address.error().context("--memory-pod"));
    config.memory_pods.push_back(*address);
  }
  auto provider = net::parse_fabric_provider(flags.provider);
  if (!provider) return fail(provider.error());
  config.fabric.provider = *provider;
  config.fabric.node = flags.fabric_node;
  auto stripe = parse_size(flags.stripe);
  if (!stripe) return fail(stripe.error().context("--stripe"));
  config.stripe_bytes = *stripe;
  auto cache = parse_size(flags.local_cache);
  if (!cache) return fail(cache.error().context("--local-cache"));
  config.local_cache_bytes = *cache;
  auto podfs = libvirt::mount_ram_backing(config);
  if (!podfs) return fail(podfs.error());
  std::printf("podfs on %s for libvirt's guest RAM, striped over %zu memory pods\n", config.dir.c_str(),
              config.memory_pods.size());
  std::fflush(stdout);
  return podfs;
}

ExitCode finish(const Status& status) {
  if (!status) return report(status.error());
  return ExitCode::kOk;
}

}  // namespace

void add_libvirt_verbs(CLI::App& app, Outcome& outcome) {
  auto* group = app.add_subcommand("libvirt", "Guest RAM in memory pods for domains of libvirt's QEMU driver");
  group->require_subcommand(1);

  auto install_flags = std::make_shared<InstallFlags>();
  auto* install = group->add_subcommand("install", "Point libvirt's memory_backing_dir at podfs (qemu.conf); "
                                                   "before libvirtd starts");
  install->add_option("--qemu-conf", install_flags->qemu_conf, "libvirt's QEMU driver configuration")
      ->capture_default_str();
  install->add_option("--memory-backing-dir", install_flags->memory_backing_dir,
                      "where `vmpod libvirt backing` mounts podfs")
      ->capture_default_str();
  install->callback([install_flags, &outcome] {
    outcome.code = finish(libvirt::install_qemu_conf(
        install_flags->qemu_conf, libvirt::QemuConfSettings{install_flags->memory_backing_dir}));
  });

  auto* uninstall = group->add_subcommand("uninstall", "Remove vmpod's settings from qemu.conf");
  uninstall->add_option("--qemu-conf", install_flags->qemu_conf, "libvirt's QEMU driver configuration")
      ->capture_default_str();
  uninstall->callback(
      [install_flags, &outcome] { outcome.code = finish(libvirt::uninstall_qemu_conf(install_flags->qemu_conf)); });

  auto backing_flags = std::make_shared<BackingFlags>();
  auto* backing = group->add_subcommand("backing", "Serve podfs as libvirt's memory backing directory until "
                                                   "Ctrl-C; start it before libvirtd");
  backing->add_option("--dir", backing_flags->dir, "mount point (qemu.conf's memory_backing_dir)")
      ->capture_default_str();
  backing->add_option("--memory-pod", backing_flags->memory_pods, "a memory pod's control socket (repeat)")
      ->required();
  backing->add_option("--provider", backing_flags->provider, "fabric provider: tcp, shm, verbs")
      ->capture_default_str();
  backing->add_option("--fabric-node", backing_flags->fabric_node, "address the fabric endpoint binds")
      ->capture_default_str();
  backing->add_option("--stripe", backing_flags->stripe, "stripe size")->capture_default_str();
  backing->add_option("--local-cache", backing_flags->local_cache,
                      "most guest RAM cached on this host, all domains together (0: no bound)")
      ->capture_default_str();
  backing->add_flag("-v,--verbose", backing_flags->verbose, "debug logging");
  backing->callback([backing_flags, &outcome] {
    outcome.code =
        serve("libvirt-backing", backing_flags->verbose, [&] { return start_backing(*backing_flags); });
  });
}

}  // namespace vmpod::cli
