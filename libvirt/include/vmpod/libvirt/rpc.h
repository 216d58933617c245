// libvirt's RPC packets, as far as the vmpod:///system relay reads them
// (libvirt's src/rpc/virnetprotocol.x and src/remote/remote_protocol.x, in
// XDR, RFC 4506): a big-endian length word that counts itself, a 24-byte
// header, the payload. Only what the relay rewrites is decoded; everything
// else passes through byte for byte.
//
// Written here rather than with libtirpc's xdr_*: the relay reads one
// header, a descriptor count and two strings from untrusted bytes, and
// wants a bounds-checked read with an error to log, not a bool and a
// malloc'd string.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod::libvirt::rpc {

inline constexpr uint32_t kRemoteProgram = 0x20008086;  // REMOTE_PROGRAM
inline constexpr uint32_t kRemoteVersion = 1;
inline constexpr int32_t kProcConnectOpen = 1;      // REMOTE_PROC_CONNECT_OPEN
inline constexpr int32_t kProcConnectGetUri = 110;  // REMOTE_PROC_CONNECT_GET_URI
// The steps of a migration (protocol version 3 with typed parameters, what
// libvirt 9.0's clients use), as migration.h takes part in them.
inline constexpr int32_t kProcDomainCreateXml = 10;        // REMOTE_PROC_DOMAIN_CREATE_XML
inline constexpr int32_t kProcDomainDefineXml = 11;        // REMOTE_PROC_DOMAIN_DEFINE_XML
inline constexpr int32_t kProcDomainDefineXmlFlags = 350;  // REMOTE_PROC_DOMAIN_DEFINE_XML_FLAGS
inline constexpr int32_t kProcMigrateBegin3 = 302;    // REMOTE_PROC_DOMAIN_MIGRATE_BEGIN3_PARAMS
inline constexpr int32_t kProcMigratePerform3 = 305;  // ..._PERFORM3_PARAMS
inline constexpr int32_t kProcMigrateFinish3 = 306;   // ..._FINISH3_PARAMS
inline constexpr int32_t kProcMigrateConfirm3 = 307;  // ..._CONFIRM3_PARAMS
inline constexpr uint32_t kMigratePeerToPeer = 1u << 1;  // VIR_MIGRATE_PEER2PEER
inline constexpr uint32_t kMaxTypedParams = 64;          // REMOTE_DOMAIN_MIGRATE_PARAM_LIST_MAX
inline constexpr uint32_t kLengthBytes = 4;
inline constexpr uint32_t kHeaderBytes = 24;
inline constexpr uint32_t kMaxPacketBytes = 33554432 + kLengthBytes;  // VIR_NET_MESSAGE_MAX
inline constexpr uint32_t kMaxFds = 32;                               // VIR_NET_MESSAGE_NUM_FDS_MAX
inline constexpr uint32_t kMaxString = 4194304;                       // REMOTE_STRING_MAX

// virterror.h values the relay's own errors carry.
inline constexpr int32_t kErrorNoConnect = 5;    // VIR_ERR_NO_CONNECT
inline constexpr int32_t kErrorInvalidArg = 8;   // VIR_ERR_INVALID_ARG
inline constexpr int32_t kErrorOperationFailed = 9;  // VIR_ERR_OPERATION_FAILED
inline constexpr int32_t kFromRemote = 13;       // VIR_FROM_REMOTE

enum class MessageType : int32_t {
  kCall = 0,
  kReply = 1,
  kMessage = 2,
  kStream = 3,
  kCallWithFds = 4,
  kReplyWithFds = 5,
  kStreamHole = 6,
};

enum class MessageStatus : int32_t { kOk = 0, kError = 1, kContinue = 2 };

struct Header {
  uint32_t program = 0;
  uint32_t version = 0;
  int32_t procedure = 0;
  MessageType type = MessageType::kCall;
  uint32_t serial = 0;
  MessageStatus status = MessageStatus::kOk;
};

// The length word's value, the size of the whole packet; kInvalidArgument
// when it could not hold a header or exceeds libvirt's limit.
Result<uint32_t> packet_length(std::string_view length_word);
// A whole packet's header; kInvalidArgument when the packet is not one.
Result<Header> parse_header(std::string_view packet);
// How many descriptors follow a packet on the socket, one per byte, as
// SCM_RIGHTS (the count opens the payload of *_WITH_FDS packets).
Result<uint32_t> fd_count(const Header& header, std::string_view packet);
// The REPLY with status ERROR that answers `call`: libvirt's remote_error
// with `message`, which virsh prints.
std::string error_reply(const Header& call, int32_t code, int32_t domain, std::string_view message);

// remote_nonnull_domain: how a call names a domain.
struct DomainRef {
  std::string name;
  std::string uuid;  // in its text form
  int32_t id = -1;
};

// A call of one of the migration steps above, with what it says.
struct MigrationCall {
  int32_t procedure = 0;
  DomainRef domain;        // Begin3, Perform3, Confirm3
  uint32_t flags = 0;      // Begin3, Perform3, Confirm3 (VIR_MIGRATE_*)
  bool cancelled = false;  // Confirm3
};
// nullopt for any other packet; kInvalidArgument for a malformed one.
Result<std::optional<MigrationCall>> migration_call(const Header& header, std::string_view packet);
// Finish3's reply: the domain that now runs here.
Result<DomainRef> finish3_domain(std::string_view packet);
// Begin3's reply with its domain XML replaced by edit(XML).
Result<std::string> edit_begin3_xml(std::string_view packet,
                                    const std::function<Result<std::string>(std::string_view)>& edit);

// A call that defines or creates a domain from XML (kProcDomainCreateXml,
// kProcDomainDefineXml, kProcDomainDefineXmlFlags) with that XML replaced
// by edit(XML); nullopt for any other packet.
Result<std::optional<std::string>> edit_domain_xml_call(const Header& header, std::string_view packet,
                                                        const std::function<Result<std::string>(std::string_view)>& edit);

// The URI libvirtd opens for a client's: "vmpod:///system" (with any query)
// is libvirt's QEMU driver, "qemu:///system"; another vmpod URI is an
// error; any other URI is not the relay's (nullopt: passed on as is).
Result<std::optional<std::string>> libvirtd_uri(std::string_view client_uri);

// One relayed connection: the connect-open of vmpod:///system becomes
// libvirtd's qemu:///system, and virConnectGetURI answers vmpod:///system
// again. Thread-safe: each direction runs in its own thread.
class UriRewriter {
 public:
  struct FromClient {
    std::string packet;
    bool answer_client = false;  // the relay's own reply, for the client
  };
  // kInvalidArgument for a malformed packet: the relay closes the connection.
  Result<FromClient> from_client(std::string packet);
  Result<std::string> from_daemon(std::string packet);

 private:
  std::mutex mutex_;
  std::string client_uri_;            // as the client opened it; empty: not a vmpod URI
  std::set<uint32_t> get_uri_calls_;  // serials of virConnectGetURI calls in flight
};

}  // namespace vmpod::libvirt::rpc
