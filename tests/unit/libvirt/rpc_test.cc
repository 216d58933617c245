// libvirt RPC packets as the vmpod:///system relay reads and rewrites them.
#include <criterion/criterion.h>

#include <string>

#include <vmpod/libvirt/rpc.h>

using namespace vmpod;
using namespace vmpod::libvirt;

namespace {

void put_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

void put_string(std::string& out, const std::string& text) {
  put_u32(out, static_cast<uint32_t>(text.size()));
  out += text;
  out.append((4 - text.size() % 4) % 4, '\0');
}

uint32_t get_u32(const std::string& bytes, size_t at) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value = value << 8 | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

std::string packet(int32_t procedure, rpc::MessageType type, uint32_t serial, rpc::MessageStatus status,
                   const std::string& payload, uint32_t program = rpc::kRemoteProgram) {
  std::string out;
  put_u32(out, static_cast<uint32_t>(28 + payload.size()));
  put_u32(out, program);
  put_u32(out, rpc::kRemoteVersion);
  put_u32(out, static_cast<uint32_t>(procedure));
  put_u32(out, static_cast<uint32_t>(type));
  put_u32(out, serial);
  put_u32(out, static_cast<uint32_t>(status));
  return out + payload;
}

std::string connect_open(const std::string& name, uint32_t flags, uint32_t serial = 1) {
  std::string payload;
  put_u32(payload, 1);
  put_string(payload, name);
  put_u32(payload, flags);
  return packet(rpc::kProcConnectOpen, rpc::MessageType::kCall, serial, rpc::MessageStatus::kOk, payload);
}

}  // namespace

Test(libvirt_rpc, connect_open_of_vmpod_system_opens_libvirts_qemu_driver) {
  rpc::UriRewriter rewriter;
  auto out = rewriter.from_client(connect_open("vmpod:///system", 3, 7));
  cr_assert(out.has_value(), "%s", out ? "" : out.error().to_string().c_str());
  cr_assert_not(out->answer_client);
  cr_assert(out->packet == connect_open("qemu:///system", 3, 7));
  auto header = rpc::parse_header(out->packet);
  cr_assert(header.has_value());
  cr_assert_eq(header->serial, 7u);
}

Test(libvirt_rpc, a_query_stays_with_the_uri) {
  rpc::UriRewriter rewriter;
  auto out = rewriter.from_client(connect_open("vmpod:///system?mode=legacy", 0));
  cr_assert(out.has_value());
  cr_assert(out->packet == connect_open("qemu:///system?mode=legacy", 0));
}

Test(libvirt_rpc, other_vmpod_uris_are_refused_with_a_libvirt_error) {
  rpc::UriRewriter rewriter;
  auto out = rewriter.from_client(connect_open("vmpod:///session", 0, 9));
  cr_assert(out.has_value());
  cr_assert(out->answer_client);
  auto header = rpc::parse_header(out->packet);
  cr_assert(header.has_value(), "%s", header ? "" : header.error().to_string().c_str());
  cr_assert_eq(header->type, rpc::MessageType::kReply);
  cr_assert_eq(header->status, rpc::MessageStatus::kError);
  cr_assert_eq(header->serial, 9u);
  cr_assert_eq(header->procedure, rpc::kProcConnectOpen);
  cr_assert_eq(get_u32(out->packet, 28), static_cast<uint32_t>(rpc::kErrorInvalidArg));
  cr_assert_eq(get_u32(out->packet, 32), static_cast<uint32_t>(rpc::kFromRemote));
  cr_assert_eq(get_u32(out->packet, 36), 1u);  // the message is there
  uint32_t length = get_u32(out->packet, 40);
  std::string message = out->packet.substr(44, length);
  cr_assert(message.find("not vmpod:///session") != std::string::npos, "%s", message.c_str());
}

Test(libvirt_rpc, other_uris_and_programs_pass_untouched) {
  rpc::UriRewriter rewriter;
  std::string qemu = connect_open("qemu:///system", 0);
  auto out = rewriter.from_client(qemu);
  cr_assert(out.has_value());
  cr_assert(out->packet == qemu);
  std::string keepalive = packet(1, rpc::MessageType::kMessage, 0, rpc::MessageStatus::kOk, "", 0x6b656570);
  auto passed = rewriter.from_client(keepalive);
  cr_assert(passed.has_value());
  cr_assert(passed->packet == keepalive);
  auto back = rewriter.from_daemon(keepalive);
  cr_assert(back.has_value());
  cr_assert(*back == keepalive);
}

Test(libvirt_rpc, get_uri_answers_the_uri_the_client_opened) {
  rpc::UriRewriter rewriter;
  cr_assert(rewriter.from_client(connect_open("vmpod:///system", 0)).has_value());
  auto call = packet(rpc::kProcConnectGetUri, rpc::MessageType::kCall, 5, rpc::MessageStatus::kOk, "");
  cr_assert(rewriter.from_client(call).has_value());
  std::string qemu_uri;
  put_string(qemu_uri, "qemu:///system");
  std::string vmpod_uri;
  put_string(vmpod_uri, "vmpod:///system");
  auto reply = rewriter.from_daemon(
      packet(rpc::kProcConnectGetUri, rpc::MessageType::kReply, 5, rpc::MessageStatus::kOk, qemu_uri));
  cr_assert(reply.has_value());
  cr_assert(*reply == packet(rpc::kProcConnectGetUri, rpc::MessageType::kReply, 5, rpc::MessageStatus::kOk,
                             vmpod_uri));
  // A reply to no call of the client's is not rewritten.
  std::string stray = packet(rpc::kProcConnectGetUri, rpc::MessageType::kReply, 6, rpc::MessageStatus::kOk, qemu_uri);
  auto untouched = rewriter.from_daemon(stray);
  cr_assert(untouched.has_value());
  cr_assert(*untouched == stray);
}

Test(libvirt_rpc, malformed_packets_are_errors) {
  rpc::UriRewriter rewriter;
  std::string short_length;
  put_u32(short_length, 27);
  cr_assert_not(rpc::packet_length(short_length).has_value());
  std::string huge;
  put_u32(huge, rpc::kMaxPacketBytes + 1);
  cr_assert_not(rpc::packet_length(huge).has_value());

  std::string lying = connect_open("vmpod:///system", 0);
  lying.pop_back();
  cr_assert_not(rewriter.from_client(lying).has_value(), "a packet shorter than its length word says");

  std::string payload;
  put_u32(payload, 1);
  put_u32(payload, 100);  // a 100-byte name that is not there
  auto truncated = rewriter.from_client(
      packet(rpc::kProcConnectOpen, rpc::MessageType::kCall, 1, rpc::MessageStatus::kOk, payload));
  cr_assert_not(truncated.has_value());
  cr_assert_eq(truncated.error().code(), ErrorCode::kInvalidArgument);

  auto bad_type = rpc::parse_header(packet(1, static_cast<rpc::MessageType>(7), 1, rpc::MessageStatus::kOk, ""));
  cr_assert_not(bad_type.has_value());
}

Test(libvirt_rpc, descriptor_counts) {
  std::string two;
  put_u32(two, 2);
  std::string with_fds = packet(1, rpc::MessageType::kCallWithFds, 1, rpc::MessageStatus::kOk, two);
  auto header = rpc::parse_header(with_fds);
  cr_assert(header.has_value());
  auto count = rpc::fd_count(*header, with_fds);
  cr_assert(count.has_value());
  cr_assert_eq(*count, 2u);

  std::string many;
  put_u32(many, rpc::kMaxFds + 1);
  std::string too_many = packet(1, rpc::MessageType::kReplyWithFds, 1, rpc::MessageStatus::kOk, many);
  cr_assert_not(rpc::fd_count(*rpc::parse_header(too_many), too_many).has_value());

  std::string plain = packet(1, rpc::MessageType::kCall, 1, rpc::MessageStatus::kOk, two);
  cr_assert_eq(*rpc::fd_count(*rpc::parse_header(plain), plain), 0u);
}

namespace {

void put_domain(std::string& out, const std::string& name, int32_t id) {
  put_string(out, name);
  for (uint8_t byte = 0; byte < 16; ++byte) out += static_cast<char>(0xa0 + byte);
  put_u32(out, static_cast<uint32_t>(id));
}

// One typed parameter of every type libvirt sends.
void put_params(std::string& out) {
  put_u32(out, 4);
  put_string(out, "migrate_uri");
  put_u32(out, 7);  // string
  put_string(out, "tcp://127.0.0.1:49152");
  put_string(out, "bandwidth");
  put_u32(out, 4);  // ullong
  put_u32(out, 0);
  put_u32(out, 8192);
  put_string(out, "parallel.connections");
  put_u32(out, 1);  // int
  put_u32(out, 2);
  put_string(out, "auto_converge.increment");
  put_u32(out, 5);  // double
  put_u32(out, 0x40240000);
  put_u32(out, 0);
}

const char* kUuidText = "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf";

}  // namespace

Test(libvirt_rpc, migration_calls_say_domain_flags_and_cancelled) {
  std::string begin;
  put_domain(begin, "demo", 3);
  put_params(begin);
  put_u32(begin, 1);  // VIR_MIGRATE_LIVE
  auto call = rpc::migration_call(*rpc::parse_header(packet(rpc::kProcMigrateBegin3, rpc::MessageType::kCall, 5,
                                                            rpc::MessageStatus::kOk, begin)),
                                  packet(rpc::kProcMigrateBegin3, rpc::MessageType::kCall, 5, rpc::MessageStatus::kOk, begin));
  cr_assert(call.has_value() && call->has_value(), "%s", call ? "not a migration call" : call.error().to_string().c_str());
  cr_assert_str_eq((*call)->domain.name.c_str(), "demo");
  cr_assert_str_eq((*call)->domain.uuid.c_str(), kUuidText);
  cr_assert_eq((*call)->domain.id, 3);
  cr_assert_eq((*call)->flags, 1u);

  std::string perform;
  put_domain(perform, "demo", 3);
  put_u32(perform, 1);
  put_string(perform, "qemu+tcp://other/system");  // dconnuri
  put_params(perform);
  put_string(perform, "cookie");
  put_u32(perform, 1 | rpc::kMigratePeerToPeer);
  std::string perform_packet = packet(rpc::kProcMigratePerform3, rpc::MessageType::kCall, 6, rpc::MessageStatus::kOk, perform);
  call = rpc::migration_call(*rpc::parse_header(perform_packet), perform_packet);
  cr_assert(call.has_value() && call->has_value());
  cr_assert_eq((*call)->flags & rpc::kMigratePeerToPeer, rpc::kMigratePeerToPeer);

  std::string confirm;
  put_domain(confirm, "demo", 3);
  put_params(confirm);
  put_string(confirm, "cookie");
  put_u32(confirm, 1);
  put_u32(confirm, 1);  // cancelled
  std::string confirm_packet = packet(rpc::kProcMigrateConfirm3, rpc::MessageType::kCall, 7, rpc::MessageStatus::kOk, confirm);
  call = rpc::migration_call(*rpc::parse_header(confirm_packet), confirm_packet);
  cr_assert(call.has_value() && call->has_value());
  cr_assert((*call)->cancelled);

  // Other calls, and replies, are not migration calls; a cut one is an error.
  std::string other = packet(rpc::kProcConnectGetUri, rpc::MessageType::kCall, 8, rpc::MessageStatus::kOk, "");
  call = rpc::migration_call(*rpc::parse_header(other), other);
  cr_assert(call.has_value() && !call->has_value());
  std::string reply = packet(rpc::kProcMigrateBegin3, rpc::MessageType::kReply, 5, rpc::MessageStatus::kOk, begin);
  call = rpc::migration_call(*rpc::parse_header(reply), reply);
  cr_assert(call.has_value() && !call->has_value());
  for (size_t cut : {size_t{0}, size_t{4}, size_t{30}, confirm.size() - 4}) {
    std::string cut_packet = packet(rpc::kProcMigrateConfirm3, rpc::MessageType::kCall, 9, rpc::MessageStatus::kOk,
                                    confirm.substr(0, cut));
    auto truncated = rpc::migration_call(*rpc::parse_header(cut_packet), cut_packet);
    cr_assert(!truncated.has_value(), "a Confirm3 cut at %zu parsed", cut);
  }
  std::string bad_type;
  put_domain(bad_type, "demo", 3);
  put_u32(bad_type, 1);
  put_string(bad_type, "field");
  put_u32(bad_type, 9);  // no such type
  std::string bad_packet = packet(rpc::kProcMigrateBegin3, rpc::MessageType::kCall, 10, rpc::MessageStatus::kOk, bad_type);
  cr_assert(!rpc::migration_call(*rpc::parse_header(bad_packet), bad_packet).has_value());
}

Test(libvirt_rpc, begin3_reply_gets_its_xml_edited_and_finish3_names_its_domain) {
  std::string ret;
  put_string(ret, "cookie!");
  put_string(ret, "<domain/>");
  std::string reply = packet(rpc::kProcMigrateBegin3, rpc::MessageType::kReply, 5, rpc::MessageStatus::kOk, ret);
  auto edited = rpc::edit_begin3_xml(reply, [](std::string_view xml) -> Result<std::string> {
    return std::string(xml) + "<!-- more -->";
  });
  cr_assert(edited.has_value(), "%s", edited ? "" : edited.error().to_string().c_str());
  std::string expected_ret;
  put_string(expected_ret, "cookie!");
  put_string(expected_ret, "<domain/><!-- more -->");
  cr_assert(*edited == packet(rpc::kProcMigrateBegin3, rpc::MessageType::kReply, 5, rpc::MessageStatus::kOk, expected_ret));
  auto refused = rpc::edit_begin3_xml(reply, [](std::string_view) -> Result<std::string> {
    return fail(ErrorCode::kInvalidArgument, "no");
  });
  cr_assert(!refused.has_value());

  std::string finish;
  put_domain(finish, "moved", 12);
  put_string(finish, "cookie");
  auto domain = rpc::finish3_domain(packet(rpc::kProcMigrateFinish3, rpc::MessageType::kReply, 3, rpc::MessageStatus::kOk, finish));
  cr_assert(domain.has_value());
  cr_assert_str_eq(domain->name.c_str(), "moved");
  cr_assert_eq(domain->id, 12);
  cr_assert(!rpc::finish3_domain(packet(rpc::kProcMigrateFinish3, rpc::MessageType::kReply, 3, rpc::MessageStatus::kOk,
                                        finish.substr(0, 10))).has_value());
}

Test(libvirt_rpc, define_and_create_calls_get_their_xml_edited) {
  auto more = [](std::string_view xml) -> Result<std::string> { return std::string(xml) + "<!-- more -->"; };
  for (int32_t procedure : {rpc::kProcDomainDefineXml, rpc::kProcDomainDefineXmlFlags, rpc::kProcDomainCreateXml}) {
    std::string args, expected_args;
    put_string(args, "<domain/>");
    put_string(expected_args, "<domain/><!-- more -->");
    if (procedure != rpc::kProcDomainDefineXml) {
      put_u32(args, 3);  // the flags follow the XML
      put_u32(expected_args, 3);
    }
    std::string call = packet(procedure, rpc::MessageType::kCall, 9, rpc::MessageStatus::kOk, args);
    auto header = rpc::parse_header(call);
    cr_assert(header.has_value());
    auto edited = rpc::edit_domain_xml_call(*header, call, more);
    cr_assert(edited.has_value(), "%d: %s", procedure, edited ? "" : edited.error().to_string().c_str());
    cr_assert(edited->has_value(), "procedure %d was not edited", procedure);
    cr_assert(**edited == packet(procedure, rpc::MessageType::kCall, 9, rpc::MessageStatus::kOk, expected_args),
              "procedure %d", procedure);
    std::string truncated = packet(procedure, rpc::MessageType::kCall, 9, rpc::MessageStatus::kOk, args.substr(0, 6));
    auto bad = rpc::edit_domain_xml_call(*rpc::parse_header(truncated), truncated, more);
    cr_assert(!bad.has_value() && bad.error().code() == ErrorCode::kInvalidArgument, "procedure %d", procedure);
  }
  // Replies, other calls and other programs pass.
  std::string args;
  put_string(args, "<domain/>");
  for (const std::string& other :
       {packet(rpc::kProcDomainDefineXml, rpc::MessageType::kReply, 9, rpc::MessageStatus::kOk, args),
        packet(rpc::kProcConnectGetUri, rpc::MessageType::kCall, 9, rpc::MessageStatus::kOk, args),
        packet(rpc::kProcDomainDefineXml, rpc::MessageType::kCall, 9, rpc::MessageStatus::kOk, args, 0x20008087)}) {
    auto passed = rpc::edit_domain_xml_call(*rpc::parse_header(other), other, more);
    cr_assert(passed.has_value() && !passed->has_value());
  }
}
