// RFC 4648 base64, for the guest agent's line protocol and kernel command
// lines. Hand-written: 40 lines do not justify a crypto library dependency.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace vmpod {

std::string base64_encode(std::string_view bytes);
// nullopt for input that is not padded base64.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace vmpod
