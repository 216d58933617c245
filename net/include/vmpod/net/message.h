// protobuf-c messages in frames: pack a message into a body, unpack a body
// into an owned message, and the pod.Error message that error frames carry.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <protobuf-c/protobuf-c.h>

#include <vmpod/base/result.h>

namespace vmpod::net {

struct MessageDeleter {
  void operator()(ProtobufCMessage* message) const;
  // Every generated message struct begins with its ProtobufCMessage base.
  template <class T>
  void operator()(T* message) const {
    (*this)(reinterpret_cast<ProtobufCMessage*>(message));
  }
};

// An unpacked message of type T (a protobuf-c generated struct).
template <class T>
using MessagePtr = std::unique_ptr<T, MessageDeleter>;

std::string pack_message(const ProtobufCMessage& message);

// kInvalidArgument when the bytes are not a valid message of that type.
Result<std::unique_ptr<ProtobufCMessage, MessageDeleter>> unpack_message(
    const ProtobufCMessageDescriptor& descriptor, std::string_view bytes);

template <class T>
Result<MessagePtr<T>> unpack(const ProtobufCMessageDescriptor& descriptor, std::string_view bytes) {
  auto message = unpack_message(descriptor, bytes);
  if (!message) return fail(message.error());
  return MessagePtr<T>(reinterpret_cast<T*>(message->release()));
}

// The body of an error frame: the code and message of an Error.
std::string pack_error(const Error& error);
Error unpack_error(std::string_view bytes);

}  // namespace vmpod::net
