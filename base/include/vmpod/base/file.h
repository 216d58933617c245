// Whole small files, read and written in one call: a plan, a report, a
// device state, the tail of a console log. Errors carry the path and errno.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <vmpod/base/result.h>

namespace vmpod {

Result<std::string> read_file(const std::string& path);
// The last `limit` bytes of the file (all of a shorter one).
Result<std::string> read_file_tail(const std::string& path, size_t limit);
Status write_file(const std::string& path, std::string_view bytes);
// Writes PATH.partial, then renames it over PATH: a reader, or a crash,
// sees the old file or the whole new one, never half of it. With `mode`,
// the new file gets it before it replaces the old (a configuration file
// that must stay private).
Status write_file_atomically(const std::string& path, std::string_view bytes,
                             std::optional<mode_t> mode = std::nullopt);

}  // namespace vmpod
