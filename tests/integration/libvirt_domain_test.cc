// libvirt's own QEMU driver with guest RAM in memory pods, on a
// LibvirtHost: real virtlogd and libvirtd, podfs mounted by `vmpod libvirt
// backing` as qemu.conf's memory_backing_dir, vmpod's QEMU hook, domains
// driven with `virsh -c vmpod:///system` through `vmpod libvirt relay`,
// which lets libvirtd judge each client as itself. A domain's vmpod
// element places its RAM on the memory pods it names, the relay gives it
// vmpod's own QMP monitor, the RAM goes away with the domain, a placement
// that cannot be met stops the start with vmpod's message and leaves
// nothing, a domain with plain memory never touches podfs, and a lost
// memory pod fails only the domain on it. `virsh migrate` to a second host (a LibvirtHost in a
// mount namespace of its own, on the same memory pods) and back moves no
// RAM and keeps a checksummed workload intact.
#include <criterion/criterion.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include <vmpod/base/file.h>
#include <vmpod/libvirt/migration.h>
#include <vmpod/pods/memory_client.h>
#include <vmpod/qmp/qmp_client.h>

#include "harness.h"
#include "libvirt_host.h"

using namespace vmpod;
using namespace std::chrono_literals;

namespace {

constexpr const char* kPodsDomain = "vmpod-test-pods";
constexpr const char* kPlainDomain = "vmpod-test-plain";
constexpr const char* kRefusedDomain = "vmpod-test-refused";

std::unique_ptr<testing::LibvirtHost>& host() {
  static std::unique_ptr<testing::LibvirtHost> instance;
  return instance;
}

// The second host, for migrations.
std::unique_ptr<testing::LibvirtHost>& other_host() {
  static std::unique_ptr<testing::LibvirtHost> instance;
  return instance;
}

void tear_down() {
  other_host().reset();
  host().reset();
  testing::stop_all();
}

std::string virsh(const std::string& arguments) {
  auto output = host()->virsh(arguments);
  cr_assert(output.has_value(), "%s", output ? "" : output.error().to_string().c_str());
  return *output;
}

void define(const std::string& name, const std::string& extra) {
  auto defined = host()->define(name, extra);
  cr_assert(defined.has_value(), "%s", defined ? "" : defined.error().to_string().c_str());
}

template <class Ready>
void wait_until(const char* what, std::chrono::seconds timeout, Ready ready) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ready()) {
    cr_assert(std::chrono::steady_clock::now() < deadline, "%s: not within %lds", what,
              static_cast<long>(timeout.count()));
    std::this_thread::sleep_for(100ms);
  }
}

// The memory pods' counters, summed.
pods::MemoryPodStats pod_totals(const std::vector<net::SocketAddress>& pods) {
  pods::MemoryPodStats total;
  for (const auto& address : pods) {
    auto client = pods::MemoryPodClient::connect(address, {});
    cr_assert(client.has_value(), "memory pod: %s", client ? "" : client.error().to_string().c_str());
    auto stats = (*client)->stats();
    cr_assert(stats.has_value(), "stats: %s", stats ? "" : stats.error().to_string().c_str());
    total.regions += stats->regions;
    total.pages_held += stats->pages_held;
    total.bytes_written += stats->bytes_written;
  }
  return total;
}

size_t entries_in(const std::string& dir) {
  std::error_code error;
  size_t count = 0;
  for (auto it = std::filesystem::directory_iterator(dir, error); !error && it != std::filesystem::directory_iterator();
       it.increment(error)) {
    ++count;
  }
  return count;
}

// The one pc.ram of the one running file-backed domain.
std::string running_ram_file() {
  std::string file;
  for (const auto& entry : std::filesystem::directory_iterator(host()->domains_dir())) file = entry.path() / "pc.ram";
  cr_assert(!file.empty() && std::filesystem::exists(file), "no pc.ram under %s", host()->domains_dir().c_str());
  return file;
}

std::string placement_of(const std::string& file) {
  char value[128] = {};
  ssize_t n = ::getxattr(file.c_str(), "user.vmpod.placement", value, sizeof(value) - 1);
  cr_assert_gt(n, 0, "%s has no placement: %s", file.c_str(), strerror(errno));
  return value;
}

// Sends `bytes` to the relay as a client would, then hangs up.
void send_to_relay(const std::string& bytes) {
  auto fd = net::connect_socket(net::SocketAddress{net::SocketAddress::Kind::kUnix, "/run/libvirt/virtvmpodd-sock", {}, 0},
                                5s);
  cr_assert(fd.has_value(), "%s", fd ? "" : fd.error().to_string().c_str());
  cr_assert_eq(::send(fd->get(), bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
}

}  // namespace

Test(libvirt_domain, ram_in_memory_pods_through_libvirts_qemu_driver, .timeout = 400, .fini = tear_down) {
  std::string dir = testing::test_dir("libvirt");
  testing::GuestOptions options;
  options.pod_capacity_bytes = 512ull << 20;
  auto* cluster = testing::start_cluster(dir, options);
  const auto& pods = cluster->memory_pod_addresses();
  testing::LibvirtHostConfig config{dir, std::getenv("VMPOD_BINARY"), std::getenv("VMPOD_IMAGE_DIR"), pods, ""};
  auto started = testing::LibvirtHost::start(config);
  cr_assert(started.has_value(), "%s", started ? "" : started.error().to_string().c_str());
  host() = std::move(*started);
  const std::string domain_dir = host()->domains_dir();

  // Installing again changes nothing.
  auto again = testing::run_command(std::string(std::getenv("VMPOD_BINARY")) +
                                    " libvirt install --memory-backing-dir " + host()->ram_dir());
  cr_assert_eq(again.status, 0, "a second install: %s", again.output.c_str());
  std::string setting = "memory_backing_dir = \"" + host()->ram_dir() + "\"";
  auto conf = read_file("/etc/libvirt/qemu.conf");
  cr_assert(conf.has_value());
  cr_assert_eq(conf->find(setting), conf->rfind(setting), "installing twice wrote the setting twice");
  cr_assert(std::filesystem::exists("/etc/libvirt/hooks/qemu"), "no hook installed");

  // vmpod:///system is libvirt's QEMU driver under vmpod's name; other
  // vmpod URIs are refused with a reason; a user other than root gets
  // from libvirtd through the relay exactly what it gets straight.
  cr_assert(virsh("uri").find("vmpod:///system") != std::string::npos, "virsh uri: %s", virsh("uri").c_str());
  auto session = testing::run_command("virsh -c vmpod:///session list");
  cr_assert_neq(session.status, 0);
  cr_assert(session.output.find("vmpod serves only vmpod:///system") != std::string::npos, "virsh said: %s",
            session.output.c_str());
  const std::string as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups virsh ";
  auto relayed = testing::run_command(as_nobody + "-c vmpod:///system list");
  auto straight = testing::run_command(as_nobody + "-c qemu:///system list");
  cr_assert_eq(relayed.status, straight.status, "as nobody: relayed '%s', straight '%s'", relayed.output.c_str(),
               straight.output.c_str());
  cr_assert_str_eq(relayed.output.c_str(), straight.output.c_str());
  // Garbage, a length word beyond libvirt's limit and a truncated packet
  // each end only their own connection.
  send_to_relay("GET / HTTP/1.1\r\n\r\n");
  send_to_relay(std::string("\x7f\xff\xff\xff", 4) + std::string(64, 'x'));
  send_to_relay(std::string("\x00\x00\x01\x00", 4) + std::string(40, '\0'));
  cr_assert(virsh("uri").find("vmpod:///system") != std::string::npos, "the relay stopped answering");

  // A domain whose RAM is a file, placed on one memory pod in 2 MiB
  // stripes: the hook sets the placement of the directory libvirt then
  // makes on podfs, and QEMU maps pc.ram there.
  auto before = pod_totals(pods);
  define(kPodsDomain, std::string(testing::kFileBacking) + testing::vmpod_element("pods='1' stripe='2M'"));
  virsh(std::string("start ") + kPodsDomain);
  std::string ram_file = running_ram_file();
  cr_assert_eq(std::filesystem::file_size(ram_file), 256ull << 20);
  struct stat st {};
  cr_assert_eq(::stat(ram_file.c_str(), &st), 0);
  cr_assert_neq(st.st_uid, 0u, "pc.ram is root's: the domain's QEMU user did not get its directory");
  cr_assert_eq(pod_totals(pods).regions, before.regions + 1, "pc.ram is not on the one memory pod asked for");
  std::string placement = placement_of(ram_file);
  cr_assert(placement.find(" stripe=2097152") != std::string::npos, "pc.ram placed as %s", placement.c_str());
  cr_assert_eq(placement.find(','), std::string::npos, "pc.ram on more than one pod: %s", placement.c_str());

  auto agent = cpuserver::GuestAgent::connect(host()->agent_socket(kPodsDomain), 120s);
  cr_assert(agent.has_value(), "guest agent: %s", agent ? "" : agent.error().to_string().c_str());
  auto memcheck = (*agent)->run("vmpod-memcheck --size-mib 64 --seed 23", 120s);
  cr_assert(memcheck.has_value(), "%s", memcheck ? "" : memcheck.error().to_string().c_str());
  cr_assert_eq(memcheck->exit_code, 0, "memcheck: %s", memcheck->output.c_str());
  cr_assert(memcheck->output.find("MEMCHECK verified ok") != std::string::npos, "%s", memcheck->output.c_str());
  // The guest's writes sit in the page cache until written back.
  ::sync();
  auto written = pod_totals(pods);
  cr_assert_geq(written.bytes_written - before.bytes_written, 64ull << 20,
                "the memory pods took %lu bytes of the guest's 64 MiB pattern",
                written.bytes_written - before.bytes_written);
  cr_assert_gt(written.pages_held, before.pages_held);

  // The relay gave the domain vmpod's own QMP monitor when it was defined;
  // it answers beside libvirt's.
  cr_assert(virsh(std::string("dumpxml ") + kPodsDomain).find("vmpod-monitor") != std::string::npos,
            "no vmpod monitor in the domain's XML");
  std::string uuid = virsh(std::string("domuuid ") + kPodsDomain);
  uuid.erase(uuid.find_last_not_of(" \n") + 1);
  const std::string monitor = libvirt::monitor_socket(host()->ram_dir(), uuid);
  auto vmpod_monitor = qmp::QmpClient::connect({net::SocketAddress::Kind::kUnix, monitor, "", 0}, 10s);
  cr_assert(vmpod_monitor.has_value(), "vmpod's monitor at %s: %s", monitor.c_str(),
            vmpod_monitor ? "" : vmpod_monitor.error().to_string().c_str());
  auto vmpod_status = (*vmpod_monitor)->execute("query-status");
  cr_assert(vmpod_status.has_value() && (*vmpod_status)["status"] == "running", "%s",
            vmpod_status ? vmpod_status->dump().c_str() : vmpod_status.error().to_string().c_str());
  vmpod_monitor->reset();

  // libvirt keeps its own monitor: qemu-monitor-command, suspend, resume.
  auto status = virsh(std::string("qemu-monitor-command ") + kPodsDomain + " '{\"execute\":\"query-status\"}'");
  cr_assert(status.find("\"running\"") != std::string::npos, "%s", status.c_str());
  virsh(std::string("suspend ") + kPodsDomain);
  cr_assert(virsh(std::string("domstate ") + kPodsDomain).find("paused") != std::string::npos);
  virsh(std::string("resume ") + kPodsDomain);
  cr_assert(virsh(std::string("domstate ") + kPodsDomain).find("running") != std::string::npos);
  auto after_resume = (*agent)->run("echo alive", 30s);
  cr_assert(after_resume && after_resume->output.find("alive") != std::string::npos, "the guest did not run on");

  virsh(std::string("destroy ") + kPodsDomain);
  virsh(std::string("undefine ") + kPodsDomain);
  wait_until("the domain's directory removed", 10s, [&] { return entries_in(domain_dir) == 0; });
  auto released = pod_totals(pods);
  cr_assert_eq(released.regions, before.regions, "the domain's regions outlived it");
  cr_assert_eq(released.pages_held, before.pages_held, "the domain's pages outlived it");

  // A placement the backing cannot meet: the start fails with vmpod's
  // reason in virsh's message and leaves no directory and no region.
  define(kRefusedDomain, std::string(testing::kFileBacking) + testing::vmpod_element("pods='9'"));
  auto refused = host()->virsh(std::string("start ") + kRefusedDomain);
  cr_assert(!refused.has_value(), "a domain asking for 9 memory pods of 2 started");
  cr_assert(refused.error().message().find("the backing has 2 memory pods") != std::string::npos, "virsh said: %s",
            refused.error().message().c_str());
  cr_assert_eq(entries_in(domain_dir), 0u, "the refused domain left a directory");
  cr_assert_eq(pod_totals(pods).regions, before.regions, "the refused domain left regions");
  virsh(std::string("undefine ") + kRefusedDomain);

  // A domain with plain memory: libvirt never puts it on podfs, and the
  // relay leaves its XML alone.
  define(kPlainDomain, "");
  cr_assert(virsh(std::string("dumpxml ") + kPlainDomain).find("vmpod-monitor") == std::string::npos,
            "a domain with plain memory got vmpod's monitor");
  // A call that passes a file descriptor (libvirt sends it after the
  // packet, as SCM_RIGHTS) reaches libvirtd through the relay.
  virsh(std::string("dom-fd-associate ") + kPlainDomain + " --name vmpod-test --pass-fds 3 3</etc/hostname");
  virsh(std::string("start ") + kPlainDomain);
  auto plain_agent = cpuserver::GuestAgent::connect(host()->agent_socket(kPlainDomain), 120s);
  cr_assert(plain_agent.has_value(), "plain guest agent: %s", plain_agent ? "" : plain_agent.error().to_string().c_str());
  cr_assert_eq(entries_in(domain_dir), 0u, "a domain with plain memory got a directory on podfs");
  cr_assert_eq(pod_totals(pods).regions, before.regions, "a domain with plain memory got regions");
  virsh(std::string("destroy ") + kPlainDomain);
  virsh(std::string("undefine ") + kPlainDomain);

  // The memory pod under a running domain's RAM dies: that domain fails
  // (its QEMU is stopped, libvirt marks it crashed) within seconds, and
  // libvirtd, the backing and its mount stay up. Last: the pod stays dead.
  define(kPodsDomain, std::string(testing::kFileBacking) + testing::vmpod_element("pods='1'"));
  virsh(std::string("start ") + kPodsDomain);
  size_t lost_pod = placement_of(running_ram_file()).rfind("pods=mem1 ", 0) == 0 ? 1 : 0;
  cluster->memory_pod_process(lost_pod).kill(SIGKILL);
  wait_until("the domain on the lost pod failed", 20s, [&] {
    return virsh(std::string("domstate --reason ") + kPodsDomain).find("shut off (crashed)") != std::string::npos;
  });
  cr_assert(host()->libvirtd().running(), "libvirtd died with the memory pod");
  cr_assert(host()->backing().running(), "the backing died with the memory pod");
  cr_assert(host()->relay().running(), "the relay died with the memory pod");
  cr_assert(entries_in(host()->ram_dir()) > 0, "podfs went away with the memory pod");
  virsh("list --all");
  virsh(std::string("undefine ") + kPodsDomain);
}

namespace {

constexpr const char* kMovingDomain = "vmpod-test-moving";

std::string virsh_on(testing::LibvirtHost& on, const std::string& arguments) {
  auto output = on.virsh(arguments);
  cr_assert(output.has_value(), "%s", output ? "" : output.error().to_string().c_str());
  return *output;
}

// How much RAM the last incoming migration carried, from the destination's
// `virsh domjobinfo --completed` ("Memory total:     384.000 KiB").
double migrated_memory_mib(testing::LibvirtHost& destination, const std::string& domain) {
  std::string info = virsh_on(destination, "domjobinfo --completed " + domain);
  size_t at = info.find("Memory total:");
  cr_assert_neq(at, std::string::npos, "domjobinfo: %s", info.c_str());
  double value = 0;
  char unit[8] = {};
  cr_assert_eq(std::sscanf(info.c_str() + at, "Memory total: %lf %7s", &value, unit), 2, "domjobinfo: %s", info.c_str());
  std::string_view u(unit);
  return u == "B" ? value / 1048576 : u == "KiB" ? value / 1024 : u == "MiB" ? value : u == "GiB" ? value * 1024 : 1e9;
}

// Moves the domain, and checks that it runs there and that the move
// carried no RAM.
void migrate(testing::LibvirtHost& from, testing::LibvirtHost& to, int port) {
  auto moved = from.migrate(kMovingDomain, to, port);
  cr_assert(moved.has_value(), "%s", moved ? "" : moved.error().to_string().c_str());
  cr_assert(virsh_on(to, std::string("domstate ") + kMovingDomain).find("running") != std::string::npos,
            "the domain does not run on the destination");
  double carried = migrated_memory_mib(to, kMovingDomain);
  cr_assert_lt(carried, 16.0, "the migration carried %.1f MiB of a 256 MiB guest", carried);
}

void append_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

// A Perform3 call for a peer-to-peer migration of the running domain,
// sent to the relay on a connection of its own: the relay's reply.
std::string perform3_p2p_reply(const std::string& domain, int id) {
  std::string call;
  for (uint32_t word : {0x20008086u, 1u, 305u, 0u, 1u, 0u}) append_u32(call, word);  // REMOTE_PROC_DOMAIN_MIGRATE_PERFORM3_PARAMS
  append_u32(call, static_cast<uint32_t>(domain.size()));
  call += domain;
  call.append((4 - domain.size() % 4) % 4, '\0');
  call.append(16, '\0');  // the uuid: the relay finds the domain by name and id
  append_u32(call, static_cast<uint32_t>(id));
  for (uint32_t word : {0u, 0u, 0u, 3u}) append_u32(call, word);  // no dconnuri, params, cookie; LIVE|PEER2PEER
  std::string packet;
  append_u32(packet, static_cast<uint32_t>(call.size() + 4));
  packet += call;
  auto fd = net::connect_socket(net::SocketAddress{net::SocketAddress::Kind::kUnix, "/run/libvirt/virtvmpodd-sock", {}, 0},
                                5s);
  cr_assert(fd.has_value(), "%s", fd ? "" : fd.error().to_string().c_str());
  cr_assert(net::send_all(fd->get(), packet).has_value());
  std::string reply(4, '\0');
  cr_assert(net::read_exact(fd->get(), reply.data(), 4, false).has_value(), "no reply to Perform3");
  uint32_t length = static_cast<unsigned char>(reply[0]) << 24 | static_cast<unsigned char>(reply[1]) << 16 |
                    static_cast<unsigned char>(reply[2]) << 8 | static_cast<unsigned char>(reply[3]);
  cr_assert(length > 28 && length < 65536, "a reply of %u bytes", length);
  reply.resize(length);
  cr_assert(net::read_exact(fd->get(), reply.data() + 4, length - 4, true).has_value());
  return reply;
}

std::unique_ptr<cpuserver::GuestAgent> agent_of(testing::LibvirtHost& on, const std::string& domain) {
  auto agent = cpuserver::GuestAgent::connect(on.agent_socket(domain), 120s);
  cr_assert(agent.has_value(), "guest agent: %s", agent ? "" : agent.error().to_string().c_str());
  return std::move(*agent);
}

}  // namespace

Test(libvirt_domain, virsh_migrate_moves_no_ram_and_keeps_the_workload_intact, .timeout = 400, .fini = tear_down) {
  std::string dir = testing::test_dir("libvirt-migrate");
  testing::GuestOptions options;
  options.pod_capacity_bytes = 512ull << 20;
  auto* cluster = testing::start_cluster(dir, options);
  const auto& pods = cluster->memory_pod_addresses();
  const char* binary = std::getenv("VMPOD_BINARY");
  const char* images = std::getenv("VMPOD_IMAGE_DIR");
  std::filesystem::create_directories(dir + "/a");
  std::filesystem::create_directories(dir + "/b");
  auto a = testing::LibvirtHost::start({dir + "/a", binary, images, pods, ""});
  cr_assert(a.has_value(), "%s", a ? "" : a.error().to_string().c_str());
  host() = std::move(*a);
  auto b = testing::LibvirtHost::start({dir + "/b", binary, images, pods, "5a1c0de0-0000-4000-8000-00000000000b"});
  cr_assert(b.has_value(), "%s", b ? "" : b.error().to_string().c_str());
  other_host() = std::move(*b);
  testing::LibvirtHost& source = *host();
  testing::LibvirtHost& destination = *other_host();

  const auto before = pod_totals(pods);
  // File-backed without a vmpod element: the backing's pods and stripe
  // (the element's placement is the first test's).
  define(kMovingDomain, std::string(testing::kFileBacking));
  virsh(std::string("start ") + kMovingDomain);
  cr_assert_eq(pod_totals(pods).regions, before.regions + 2);
  auto agent = agent_of(source, kMovingDomain);
  // Six rounds of write-then-verify over 64 MiB; the first waits for /tmp/go.
  testing::guest_run(*agent, "vmpod-memcheck --size-mib 64 --seed 17 --rounds 6 --wait-file /tmp/go "
                             ">/tmp/memcheck.out 2>&1 &");
  testing::guest_wait_for(*agent, "/tmp/memcheck.out", "MEMCHECK written", 120s);

  // Peer-to-peer migration would let libvirtd drive it where vmpod cannot
  // hand the RAM over (virsh itself refuses --p2p to a URI without a
  // host, so the call goes to the relay as libvirt would send it): refused
  // with the reason, and the guest runs on.
  std::string p2p = perform3_p2p_reply(kMovingDomain, std::stoi(virsh(std::string("domid ") + kMovingDomain)));
  cr_assert(p2p.find("leave out --p2p") != std::string::npos, "the relay answered a --p2p Perform3 with %zu bytes",
            p2p.size());
  cr_assert(virsh(std::string("domstate ") + kMovingDomain).find("running") != std::string::npos);

  // A destination that cannot take the domain (another domain of that
  // name is defined there): the move fails, the guest runs on where it
  // was, on its regions, owned.
  auto clash = destination.define(kMovingDomain, "");
  cr_assert(clash.has_value(), "%s", clash ? "" : clash.error().to_string().c_str());
  auto refused = source.migrate(kMovingDomain, destination, 49351);
  cr_assert(!refused.has_value(), "a move onto a domain of the same name went ahead");
  virsh_on(destination, std::string("undefine ") + kMovingDomain);
  cr_assert(virsh(std::string("domstate ") + kMovingDomain).find("running") != std::string::npos);
  cr_assert_eq(pod_totals(pods).regions, before.regions + 2);
  char owned[8] = {};
  cr_assert_eq(::getxattr(running_ram_file().c_str(), "user.vmpod.owned", owned, sizeof(owned) - 1), 3);
  cr_assert_str_eq(owned, "yes");
  cr_assert(testing::guest_run(*agent, "echo alive").output.find("alive") != std::string::npos);

  // To the other host and back while the workload writes: the RAM stays
  // in the memory pods (no region made or freed, a few hundred KiB of
  // device state carried), the guest's pattern stays right.
  migrate(source, destination, 49352);
  cr_assert_eq(pod_totals(pods).regions, before.regions + 2, "the move made or freed regions");
  wait_until("the source's directory removed", 10s, [&] { return entries_in(source.domains_dir()) == 0; });
  agent = agent_of(destination, kMovingDomain);
  testing::guest_run(*agent, "touch /tmp/go");
  testing::guest_wait_for(*agent, "/tmp/memcheck.out", "round=2", 120s);
  migrate(destination, source, 49353);
  cr_assert_eq(pod_totals(pods).regions, before.regions + 2, "the move back made or freed regions");
  agent = agent_of(source, kMovingDomain);
  std::string out = testing::guest_wait_for(*agent, "/tmp/memcheck.out", "MEMCHECK done rounds=6", 300s);
  cr_assert(out.find("FAILED") == std::string::npos, "%s", out.c_str());
  for (int round = 1; round <= 6; ++round) {
    cr_assert(out.find("round=" + std::to_string(round)) != std::string::npos, "round %d missing: %s", round, out.c_str());
  }
  auto status = virsh(std::string("qemu-monitor-command ") + kMovingDomain + " '{\"execute\":\"query-status\"}'");
  cr_assert(status.find("\"running\"") != std::string::npos, "%s", status.c_str());

  // Gone, with its regions, on both hosts.
  virsh(std::string("destroy ") + kMovingDomain);
  virsh(std::string("undefine ") + kMovingDomain);
  wait_until("the domain's directory removed", 10s, [&] { return entries_in(source.domains_dir()) == 0; });
  cr_assert_eq(entries_in(destination.domains_dir()), 0u, "the other host kept the domain's directory");
  auto released = pod_totals(pods);
  cr_assert_eq(released.regions, before.regions, "the domain's regions outlived it");
  cr_assert_eq(released.pages_held, before.pages_held, "the domain's pages outlived it");
}
