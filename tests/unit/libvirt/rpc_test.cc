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
