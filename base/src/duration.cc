#include <vmpod/base/duration.h>

#include <charconv>
#include <limits>

namespace vmpod {

Result<std::chrono::milliseconds> parse_duration(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return fail(ErrorCode::kInvalidArgument, "bad duration '" + std::string(text) + "': " + why +
                                                 " (write 500ms, 30s, 5m or 1h)");
  };
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data()) return bad("no number");
  std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  uint64_t scale = 0;
  if (unit.empty() || unit == "s") scale = 1000;
  else if (unit == "ms") scale = 1;
  else if (unit == "m" || unit == "min") scale = 60'000;
  else if (unit == "h") scale = 3'600'000;
  else return bad("unknown unit '" + std::string(unit) + "'");
  if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / scale) return bad("too long");
  return std::chrono::milliseconds(static_cast<int64_t>(value * scale));
}

std::string format_duration(std::chrono::milliseconds duration) {
  int64_t ms = duration.count();
  if (ms % 1000 != 0 || ms == 0) return std::to_string(ms) + "ms";
  int64_t s = ms / 1000;
  std::string text;
  if (s >= 3600) text += std::to_string(s / 3600) + "h";
  if (s % 3600 >= 60) text += std::to_string(s % 3600 / 60) + "m";
  if (s % 60) text += std::to_string(s % 60) + "s";
  return text;
}

}  // namespace vmpod
