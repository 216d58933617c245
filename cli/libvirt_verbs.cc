// `vmpod libvirt`: libvirt's QEMU driver with guest RAM in memory pods.
// install/uninstall edit qemu.conf and the QEMU hook; backing serves the
// podfs that libvirt uses as its memory backing directory, until SIGINT or
// SIGTERM; relay serves vmpod:///system for libvirtd, also until a signal;
// hook is what libvirtd runs as that hook.
#include <cstdio>
#include <iostream>
#include <iterator>

#include <vmpod/base/units.h>
#include <vmpod/base/subprocess.h>
#include <vmpod/libvirt/hook.h>
#include <vmpod/libvirt/qemu_conf.h>
#include <vmpod/libvirt/ram_backing.h>
#include <vmpod/libvirt/rpc_relay.h>

#include "cli.h"

namespace vmpod::cli {

namespace {

struct InstallFlags {
  std::string qemu_conf = std::string(libvirt::kQemuConfPath);
  std::string hooks_dir = std::string(libvirt::kHooksDir);
  std::string memory_backing_dir = std::string(libvirt::kDefaultRamBackingDir);
};

struct HookFlags {
  std::string memory_backing_dir = std::string(libvirt::kDefaultRamBackingDir);
  std::vector<std::string> arguments;  // DOMAIN OPERATION SUB-OPERATION EXTRA
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

struct RelayFlags {
  libvirt::RpcRelayConfig config;
  bool verbose = false;
};

Result<std::unique_ptr<libvirt::RpcRelay>> start_relay(const RelayFlags& flags) {
  auto relay = libvirt::RpcRelay::start(flags.config);
  if (!relay) return fail(relay.error());
  std::printf("vmpod:///system on %s, relayed to libvirtd at %s\n", flags.config.socket.c_str(),
              flags.config.libvirtd_socket.c_str());
  std::fflush(stdout);
  return relay;
}

Result<std::unique_ptr<libvirt::RamBacking>> start_backing(const BackingFlags& flags) {
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
  auto backing = libvirt::RamBacking::mount(config);
  if (!backing) return fail(backing.error());
  std::printf("podfs on %s for libvirt's guest RAM, striped over %zu memory pods\n", config.dir.c_str(),
              config.memory_pods.size());
  std::fflush(stdout);
  return backing;
}

ExitCode finish(const Status& status) {
  if (!status) return report(status.error());
  return ExitCode::kOk;
}

// The hook first: should qemu.conf then fail, libvirtd has a hook that
// leaves domains without a vmpod element alone.
Status install_all(const InstallFlags& flags) {
  VMPOD_TRY_CTX(libvirt::install_qemu_hook(flags.hooks_dir, self_executable(), flags.memory_backing_dir), "hook");
  return libvirt::install_qemu_conf(flags.qemu_conf, libvirt::QemuConfSettings{flags.memory_backing_dir});
}

Status uninstall_all(const InstallFlags& flags) {
  VMPOD_TRY_CTX(libvirt::uninstall_qemu_conf(flags.qemu_conf), "qemu.conf");
  return libvirt::uninstall_qemu_hook(flags.hooks_dir);
}

Status run_hook(const HookFlags& flags) {
  if (flags.arguments.size() < 3) {
    return fail(ErrorCode::kInvalidArgument, "libvirt runs the hook as: DOMAIN OPERATION SUB-OPERATION [EXTRA]");
  }
  std::string xml(std::istreambuf_iterator<char>(std::cin), {});
  auto printed = libvirt::run_qemu_hook(flags.memory_backing_dir, flags.arguments[1], flags.arguments[2], xml);
  if (!printed) return fail(printed.error());
  std::cout << *printed << std::flush;
  return {};
}

}  // namespace

void add_libvirt_verbs(CLI::App& app, Outcome& outcome) {
  auto* group = app.add_subcommand("libvirt", "Guest RAM in memory pods for domains of libvirt's QEMU driver");
  group->require_subcommand(1);

  auto install_flags = std::make_shared<InstallFlags>();
  auto* install = group->add_subcommand("install", "Point libvirt's memory_backing_dir at podfs (qemu.conf) and "
                                                   "install vmpod's QEMU hook; before libvirtd starts");
  install->add_option("--qemu-conf", install_flags->qemu_conf, "libvirt's QEMU driver configuration")
      ->capture_default_str();
  install->add_option("--hooks-dir", install_flags->hooks_dir, "libvirt's hook scripts")->capture_default_str();
  install->add_option("--memory-backing-dir", install_flags->memory_backing_dir,
                      "where `vmpod libvirt backing` mounts podfs")
      ->capture_default_str();
  install->callback([install_flags, &outcome] { outcome.code = finish(install_all(*install_flags)); });

  auto* uninstall = group->add_subcommand("uninstall", "Remove vmpod's settings from qemu.conf and its hook");
  uninstall->add_option("--qemu-conf", install_flags->qemu_conf, "libvirt's QEMU driver configuration")
      ->capture_default_str();
  uninstall->add_option("--hooks-dir", install_flags->hooks_dir, "libvirt's hook scripts")->capture_default_str();
  uninstall->callback([install_flags, &outcome] { outcome.code = finish(uninstall_all(*install_flags)); });

  auto hook_flags = std::make_shared<HookFlags>();
  auto* hook = group->add_subcommand("hook", "libvirt's QEMU hook (libvirtd runs it; the domain XML on stdin)");
  hook->add_option("--memory-backing-dir", hook_flags->memory_backing_dir, "the podfs mount")->capture_default_str();
  hook->add_option("arguments", hook_flags->arguments, "DOMAIN OPERATION SUB-OPERATION EXTRA");
  hook->callback([hook_flags, &outcome] { outcome.code = finish(run_hook(*hook_flags)); });

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

  auto relay_flags = std::make_shared<RelayFlags>();
  auto* relay = group->add_subcommand("relay", "Serve vmpod:///system (libvirt's socket for the vmpod scheme) "
                                               "for libvirtd until Ctrl-C; start it after libvirtd");
  relay->add_option("--socket", relay_flags->config.socket, "where libvirt clients look for vmpod:///system")
      ->capture_default_str();
  relay->add_option("--libvirtd-socket", relay_flags->config.libvirtd_socket, "libvirtd's read-write socket")
      ->capture_default_str();
  relay->add_option("--memory-backing-dir", relay_flags->config.memory_backing_dir,
                    "this host's podfs (qemu.conf's memory_backing_dir), for migrations without copying RAM")
      ->capture_default_str();
  relay->add_flag("-v,--verbose", relay_flags->verbose, "debug logging");
  relay->callback([relay_flags, &outcome] {
    outcome.code = serve("libvirt-relay", relay_flags->verbose, [&] { return start_relay(*relay_flags); });
  });
}

}  // namespace vmpod::cli
