// Sizes as people write them on command lines ("256M", "2G", "4096") and
// as vmpod prints them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod {

// Binary units: K, M, G, T (optionally followed by "iB" or "B"); no unit is bytes.
Result<uint64_t> parse_size(std::string_view text);
// "1.5 GiB", "256 MiB", "12 KiB", "100 B".
std::string format_bytes(uint64_t bytes);

}  // namespace vmpod
