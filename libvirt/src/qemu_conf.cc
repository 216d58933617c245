#include <vmpod/libvirt/qemu_conf.h>

#include <sys/stat.h>

#include <cerrno>
#include <vector>

#include <fmt/format.h>

#include <vmpod/base/file.h>

namespace vmpod::libvirt {

namespace {

constexpr std::string_view kBegin = "# BEGIN vmpod: written by `vmpod libvirt install`, removed by uninstall";
constexpr std::string_view kEnd = "# END vmpod";

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t end = text.find('\n');
    lines.push_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

std::string_view trimmed(std::string_view line) {
  size_t begin = line.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  size_t end = line.find_last_not_of(" \t\r");
  return line.substr(begin, end - begin + 1);
}

// The key a qemu.conf line sets ("key = value"), or "" for a comment or
// a blank line.
std::string_view key_set_by(std::string_view line) {
  line = trimmed(line);
  if (line.empty() || line.front() == '#') return {};
  return trimmed(line.substr(0, line.find('=')));
}

// The lines outside vmpod's block, each with its newline.
std::string administrators_lines(std::string_view conf) {
  std::string out;
  bool inside = false;
  for (std::string_view line : lines_of(conf)) {
    if (trimmed(line) == kBegin) {
      inside = true;
    } else if (inside && trimmed(line) == kEnd) {
      inside = false;
    } else if (!inside) {
      out.append(line);
      out.push_back('\n');
    }
  }
  return out;
}

// qemu.conf's strings are double-quoted with no escapes.
Result<std::string> quoted(std::string_view key, const std::string& value) {
  if (value.empty() || value.find_first_of("\"\n\\") != std::string::npos) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("qemu.conf: {} cannot be \"{}\"", key, value));
  }
  return "\"" + value + "\"";
}

}  // namespace

Result<std::string> with_vmpod_block(std::string_view conf, const QemuConfSettings& settings) {
  std::string out = administrators_lines(conf);
  for (std::string_view line : lines_of(out)) {
    if (key_set_by(line) == "memory_backing_dir") {
      return fail(ErrorCode::kAlreadyExists,
                  fmt::format("qemu.conf already sets memory_backing_dir (\"{}\"): remove that line, "
                              "then install again",
                              trimmed(line)));
    }
  }
  auto dir = quoted("memory_backing_dir", settings.memory_backing_dir);
  if (!dir) return fail(dir.error());
  if (!out.empty() && out.back() != '\n') out.push_back('\n');
  out += fmt::format("{}\n# Guest RAM of domains with <memoryBacking><source type='file'/> goes to podfs.\n"
                     "memory_backing_dir = {}\n{}\n",
                     kBegin, *dir, kEnd);
  return out;
}

std::string without_vmpod_block(std::string_view conf) {
  // A file that never had the block comes back byte for byte.
  if (conf.find(kBegin) == std::string_view::npos) return std::string(conf);
  return administrators_lines(conf);
}

Status install_qemu_conf(const std::string& path, const QemuConfSettings& settings) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail_errno("cannot stat " + path + " (is libvirt installed?)", errno);
  auto conf = read_file(path);
  if (!conf) return fail(conf.error());
  auto updated = with_vmpod_block(*conf, settings);
  if (!updated) return fail(updated.error().context(path));
  if (*updated == *conf) return {};
  return write_file_atomically(path, *updated, st.st_mode & 07777);
}

Status uninstall_qemu_conf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("cannot stat " + path, errno);
  }
  auto conf = read_file(path);
  if (!conf) return fail(conf.error());
  std::string updated = without_vmpod_block(*conf);
  if (updated == *conf) return {};
  return write_file_atomically(path, updated, st.st_mode & 07777);
}

}  // namespace vmpod::libvirt
