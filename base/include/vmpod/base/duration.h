// Durations as people write them in plans and flags ("500ms", "30s", "5m",
// "1h", or a bare number of seconds) and as vmpod prints them.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod {

Result<std::chrono::milliseconds> parse_duration(std::string_view text);
// "250ms", "30s", "5m", "1h30m".
std::string format_duration(std::chrono::milliseconds duration);

}  // namespace vmpod
