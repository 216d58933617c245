#include <vmpod/net/message.h>

#include "error.pb-c.h"

namespace vmpod::net {

void MessageDeleter::operator()(ProtobufCMessage* message) const {
  protobuf_c_message_free_unpacked(message, nullptr);
}

std::string pack_message(const ProtobufCMessage& message) {
  std::string out(protobuf_c_message_get_packed_size(&message), '\0');
  protobuf_c_message_pack(&message, reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

Result<std::unique_ptr<ProtobufCMessage, MessageDeleter>> unpack_message(
    const ProtobufCMessageDescriptor& descriptor, std::string_view bytes) {
  ProtobufCMessage* message = protobuf_c_message_unpack(
      &descriptor, nullptr, bytes.size(), reinterpret_cast<const uint8_t*>(bytes.data()));
  if (message == nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                std::string("malformed ") + descriptor.short_name + " message");
  }
  return std::unique_ptr<ProtobufCMessage, MessageDeleter>(message);
}

std::string pack_error(const Error& error) {
  Vmpod__Net__ErrorReply reply = VMPOD__NET__ERROR_REPLY__INIT;
  reply.code = static_cast<int32_t>(error.code());
  // protobuf-c strings are C strings: a message is carried up to its first NUL.
  reply.message = const_cast<char*>(error.message().c_str());
  return pack_message(reply.base);
}

Error unpack_error(std::string_view bytes) {
  auto reply = unpack<Vmpod__Net__ErrorReply>(vmpod__net__error_reply__descriptor, bytes);
  if (!reply) return Error(ErrorCode::kInternal, "malformed error reply");
  std::string message = (*reply)->message != nullptr ? (*reply)->message : "";
  int32_t code = (*reply)->code;
  // A peer built with a newer ErrorCode may send codes this build does not know.
  if (code < 0 || code > static_cast<int32_t>(ErrorCode::kInternal)) {
    return Error(ErrorCode::kInternal, std::move(message));
  }
  return Error(static_cast<ErrorCode>(code), std::move(message));
}

}  // namespace vmpod::net
