#include <vmpod/base/units.h>

#include <cctype>
#include <charconv>
#include <cstdio>

namespace vmpod {

Result<uint64_t> parse_size(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) {
    return fail(ErrorCode::kInvalidArgument, "'" + std::string(text) + "' is not a size");
  }
  std::string unit(end, text.data() + text.size());
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit[0] != 'B' && (unit.substr(1) == "IB" || unit.substr(1) == "B")) unit = unit.substr(0, 1);
  int shift = 0;
  if (unit.empty() || unit == "B") shift = 0;
  else if (unit == "K") shift = 10;
  else if (unit == "M") shift = 20;
  else if (unit == "G") shift = 30;
  else if (unit == "T") shift = 40;
  else return fail(ErrorCode::kInvalidArgument, "unknown size unit in '" + std::string(text) + "'");
  if (shift > 0 && value > (UINT64_MAX >> shift)) {
    return fail(ErrorCode::kInvalidArgument, "size '" + std::string(text) + "' is too large");
  }
  return value << shift;
}

std::string format_bytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char out[32];
  if (unit == 0) std::snprintf(out, sizeof(out), "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(out, sizeof(out), value < 10 ? "%.1f %s" : "%.0f %s", value, kUnits[unit]);
  return out;
}

}  // namespace vmpod
