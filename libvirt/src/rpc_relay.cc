#include <vmpod/libvirt/rpc_relay.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/libvirt/migration.h>
#include <vmpod/libvirt/rpc.h>

namespace vmpod::libvirt {

namespace {

using namespace std::chrono_literals;

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

Result<PeerCredentials> peer_credentials(int fd) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return fail_errno("SO_PEERCRED", errno);
  PeerCredentials peer{cred.pid, cred.uid, cred.gid, {}};
  peer.groups.resize(64);
  for (;;) {
    length = static_cast<socklen_t>(peer.groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, peer.groups.data(), &length) == 0) break;
    if (errno != ERANGE) return fail_errno("SO_PEERGROUPS", errno);
    peer.groups.resize(length / sizeof(gid_t));
  }
  peer.groups.resize(length / sizeof(gid_t));
  return peer;
}

// Connects to libvirtd's socket with the peer's identity, so that libvirtd
// sees the peer and not the relay. Credentials are per thread in Linux, and
// the raw system calls (unlike glibc's wrappers, which change every thread)
// change only the calling one: a thread of its own connects and ends.
Result<net::Fd> connect_as(const PeerCredentials& peer, const std::string& path) {
  Result<net::Fd> connected = fail(ErrorCode::kInternal, "not run");
  std::thread connector([&] {
    if (peer.uid != ::geteuid() || peer.gid != ::getegid()) {
      if (::geteuid() != 0) {
        connected = fail(ErrorCode::kPermissionDenied,
                         fmt::format("the relay runs as uid {} and can act only for it, not for uid {}; run it "
                                     "as root, as libvirtd runs",
                                     ::geteuid(), peer.uid));
        return;
      }
      if (::syscall(SYS_setgroups, peer.groups.size(), peer.groups.data()) != 0 ||
          ::syscall(SYS_setresgid, -1, peer.gid, -1) != 0 || ::syscall(SYS_setresuid, -1, peer.uid, -1) != 0) {
        connected = fail_errno(fmt::format("taking on uid {} gid {}", peer.uid, peer.gid), errno);
        return;
      }
    }
    connected = net::connect_socket(net::SocketAddress{net::SocketAddress::Kind::kUnix, path, {}, 0}, 5s);
  });
  connector.join();
  return connected;
}

// libvirt passes each descriptor after its packet as one byte carrying it.
Result<net::Fd> receive_fd(int fd) {
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(fd, &message, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno("recvmsg", errno);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  if (n == 0 || header == nullptr || header->cmsg_type != SCM_RIGHTS ||
      header->cmsg_len != CMSG_LEN(sizeof(int))) {
    return fail(ErrorCode::kInvalidArgument, "a packet announced a descriptor that did not come");
  }
  int received;
  std::memcpy(&received, CMSG_DATA(header), sizeof(int));
  return net::Fd(received);
}

Status send_fd(int fd, int passed) {
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &passed, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(fd, &message, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != 1) return fail_errno("sendmsg", errno);
  return {};
}

struct Packet {
  rpc::Header header;
  std::string bytes;
  std::vector<net::Fd> fds;
};

// kUnavailable when the peer closed between packets: the normal end.
Result<Packet> read_packet(int fd) {
  Packet packet;
  packet.bytes.resize(rpc::kLengthBytes);
  auto started = net::read_exact(fd, packet.bytes.data(), rpc::kLengthBytes, false);
  if (!started) return fail(started.error());
  auto length = rpc::packet_length(packet.bytes);
  if (!length) return fail(length.error());
  packet.bytes.resize(*length);
  auto rest = net::read_exact(fd, packet.bytes.data() + rpc::kLengthBytes, *length - rpc::kLengthBytes, true);
  if (!rest) return fail(ErrorCode::kInvalidArgument, "truncated packet: " + rest.error().message());
  auto header = rpc::parse_header(packet.bytes);
  if (!header) return fail(header.error());
  packet.header = *header;
  auto fds = rpc::fd_count(*header, packet.bytes);
  if (!fds) return fail(fds.error());
  for (uint32_t i = 0; i < *fds; ++i) {
    auto received = receive_fd(fd);
    if (!received) return fail(received.error());
    packet.fds.push_back(std::move(*received));
  }
  return packet;
}

Status write_packet(int fd, const std::string& bytes, const std::vector<net::Fd>& fds) {
  if (auto sent = net::send_all(fd, bytes); !sent) return sent;
  for (const auto& passed : fds) {
    if (auto sent = send_fd(fd, passed.get()); !sent) return sent;
  }
  return {};
}

// Client and libvirtd each closing is the normal end; anything else is
// worth a line in the log.
void log_end(const std::string& who, const Error& error) {
  if (error.code() == ErrorCode::kUnavailable) {
    spdlog::debug("libvirt relay: {} closed", who);
  } else {
    spdlog::warn("libvirt relay: {}: {}; closing the connection", who, error.message());
  }
}

// Refuses a client the relay cannot take to libvirtd: its first call gets
// the reason as a libvirt error, which virsh prints.
void refuse(int client_fd, const Error& reason) {
  auto call = read_packet(client_fd);
  if (!call || call->header.type != rpc::MessageType::kCall) return;
  (void)net::send_all(client_fd, rpc::error_reply(call->header, rpc::kErrorNoConnect, rpc::kFromRemote,
                                                  "vmpod libvirt relay: " + reason.message()));
}

void relay_connection(int client_fd, const std::string& libvirtd_socket, const MigrationHost& host) {
  auto peer = peer_credentials(client_fd);
  if (!peer) {
    spdlog::warn("libvirt relay: a client without credentials: {}", peer.error().message());
    return;
  }
  const std::string who = fmt::format("client pid {} uid {}", peer->pid, peer->uid);
  auto daemon = connect_as(*peer, libvirtd_socket);
  if (!daemon) {
    Error reason = daemon.error().context("libvirtd at " + libvirtd_socket);
    spdlog::warn("libvirt relay: {}: {}", who, reason.message());
    refuse(client_fd, reason);
    return;
  }
  spdlog::info("libvirt relay: {} connected to {}", who, libvirtd_socket);
  const int daemon_fd = daemon->get();
  rpc::UriRewriter rewriter;
  MigrationRelay migrations(host);
  // libvirtd's packets for the client, and the client's for libvirtd, each
  // through both; an error closes the connection.
  auto for_client = [&](std::string bytes) -> Result<std::string> {
    auto migrated = migrations.from_daemon(std::move(bytes));
    if (!migrated) return migrated;
    return rewriter.from_daemon(std::move(*migrated));
  };
  auto for_daemon = [&](std::string bytes) -> Result<rpc::UriRewriter::FromClient> {
    auto rewritten = rewriter.from_client(std::move(bytes));
    if (!rewritten || rewritten->answer_client) return rewritten;
    return migrations.from_client(std::move(rewritten->packet));
  };
  auto hang_up = [&] {
    ::shutdown(client_fd, SHUT_RDWR);
    ::shutdown(daemon_fd, SHUT_RDWR);
  };
  std::thread to_client([&] {
    for (;;) {
      auto packet = read_packet(daemon_fd);
      if (!packet) {
        log_end("libvirtd, for " + who, packet.error());
        break;
      }
      auto rewritten = for_client(std::move(packet->bytes));
      if (!rewritten) {
        log_end("libvirtd, for " + who, rewritten.error());
        break;
      }
      if (auto sent = write_packet(client_fd, *rewritten, packet->fds); !sent) {
        log_end(who, sent.error());
        break;
      }
    }
    hang_up();
  });
  for (;;) {
    auto packet = read_packet(client_fd);
    if (!packet) {
      log_end(who, packet.error());
      break;
    }
    auto rewritten = for_daemon(std::move(packet->bytes));
    if (!rewritten) {
      log_end(who, rewritten.error());
      break;
    }
    int target = rewritten->answer_client ? client_fd : daemon_fd;
    if (auto sent = write_packet(target, rewritten->packet, packet->fds); !sent) {
      log_end(rewritten->answer_client ? who : "libvirtd, for " + who, sent.error());
      break;
    }
  }
  hang_up();
  to_client.join();
}

Result<std::unique_ptr<net::StreamServer>> serve_socket(const std::string& socket, const std::string& libvirtd_socket,
                                                        const MigrationHost& host) {
  struct stat daemon_socket{};
  if (::stat(libvirtd_socket.c_str(), &daemon_socket) != 0) {
    return fail_errno(libvirtd_socket + " (start libvirtd first)", errno);
  }
  auto server = net::StreamServer::start(
      net::SocketAddress{net::SocketAddress::Kind::kUnix, socket, {}, 0},
      [libvirtd_socket, &host](int client_fd) { relay_connection(client_fd, libvirtd_socket, host); });
  if (!server) return fail(server.error().context("libvirt relay on " + socket));
  if (::chown(socket.c_str(), daemon_socket.st_uid, daemon_socket.st_gid) != 0 && errno != EPERM) {
    return fail_errno("chown " + socket, errno);
  }
  if (::chmod(socket.c_str(), daemon_socket.st_mode & 07777) != 0) return fail_errno("chmod " + socket, errno);
  spdlog::info("libvirt relay: {} for libvirtd's {} (mode {:o})", socket, libvirtd_socket,
               daemon_socket.st_mode & 07777);
  return server;
}

}  // namespace

Result<std::unique_ptr<RpcRelay>> RpcRelay::start(const RpcRelayConfig& config) {
  std::unique_ptr<RpcRelay> relay(new RpcRelay(config));
  auto read_write = serve_socket(config.socket, config.libvirtd_socket, relay->migration_host_);
  if (!read_write) return fail(read_write.error());
  relay->servers_.push_back(std::move(*read_write));
  const std::string read_only_daemon = config.libvirtd_socket + std::string(kReadOnlySuffix);
  if (::access(read_only_daemon.c_str(), F_OK) == 0) {
    auto read_only =
        serve_socket(config.socket + std::string(kReadOnlySuffix), read_only_daemon, relay->migration_host_);
    if (!read_only) return fail(read_only.error());
    relay->servers_.push_back(std::move(*read_only));
  }
  return relay;
}

RpcRelay::~RpcRelay() = default;

}  // namespace vmpod::libvirt
