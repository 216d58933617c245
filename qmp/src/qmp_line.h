#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include <vmpod/qmp/qmp_protocol.h>

namespace vmpod::qmp {

// One message as QEMU's monitor sends it: monitor_puts() turns the "\n" after
// each message into "\r\n".
inline std::string qmp_line(const nlohmann::json& message) { return qmp_json_text(message) + "\r\n"; }

}  // namespace vmpod::qmp
