// One typed control call: pack a protobuf-c request into a frame of the
// given type, wait for the reply, unpack it as the expected message.
#pragma once

#include <chrono>
#include <string>

#include <vmpod/net/message.h>
#include <vmpod/net/socket.h>
#include <vmpod/pods/page_protocol.h>
#include <vmpod/pods/protocol.h>

namespace vmpod::pods {

// The body of a request or reply that carries nothing.
std::string empty_message();

// The secret token of a RegionRef or VersionRef; kInvalidArgument unless it
// is exactly the token's size.
Result<RegionToken> token_from(const ProtobufCBinaryData& bytes);

template <class Reply>
Result<net::MessagePtr<Reply>> rpc_call(net::RpcClient& client, MessageType type,
                                        const ProtobufCMessage& request,
                                        const ProtobufCMessageDescriptor& reply_descriptor,
                                        std::chrono::milliseconds timeout) {
  auto body = client.call(wire(type), net::pack_message(request), timeout);
  if (!body) return fail(body.error().context(message_type_name(wire(type))));
  return net::unpack<Reply>(reply_descriptor, *body);
}

}  // namespace vmpod::pods
