#include <vmpod/cpuserver/podfs_placement.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vmpod/base/units.h>

namespace vmpod::cpuserver {

namespace {

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}


Status check_pod_id(const std::string& id) {
  bool well_formed = !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
  if (!well_formed) return fail(ErrorCode::kInvalidArgument, "'" + id + "' is not a pod id");
  return {};
}

Result<uint64_t> parse_stripe(std::string_view value) {
  auto stripe = parse_size(value);
  if (!stripe) return fail(stripe.error().context("stripe"));
  if (*stripe == 0 || *stripe % 4096 != 0) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("stripe={} is not a multiple of 4 KiB", value));
  }
  return *stripe;
}

// Calls `setting` with each KEY=VALUE of `text`, words apart by blanks.
template <class Setting>
Status for_each_setting(std::string_view text, std::string_view what, Setting setting) {
  while (!text.empty()) {
    size_t begin = text.find_first_not_of(" \t\n");
    if (begin == std::string_view::npos) break;
    text.remove_prefix(begin);
    std::string_view word = text.substr(0, text.find_first_of(" \t\n"));
    text.remove_prefix(word.size());
    size_t equals = word.find('=');
    std::string_view key = word.substr(0, equals);
    std::string_view value = equals == std::string_view::npos ? std::string_view{} : word.substr(equals + 1);
    if (value.empty()) return fail(ErrorCode::kInvalidArgument, fmt::format("{}: '{}' is not KEY=VALUE", what, word));
    Status taken = setting(key, value);
    if (!taken) return taken;
  }
  return {};
}

Result<pods::RegionHandle> parse_region(std::string_view text) {
  // ID:TOKEN, the pod id before them taken off already.
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 20 || !all_digits(text.substr(0, colon))) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("'{}' is not ID:TOKEN", text));
  }
  pods::RegionHandle region;
  region.id = std::stoull(std::string(text.substr(0, colon)));
  std::string_view hex = text.substr(colon + 1);
  if (hex.size() != 2 * region.token.size()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("token '{}' is not {} hex digits", hex, 2 * region.token.size()));
  }
  for (size_t i = 0; i < region.token.size(); ++i) {
    unsigned byte = 0;
    auto [end, error] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, byte, 16);
    if (error != std::errc() || end != hex.data() + 2 * i + 2) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("token '{}' is not hex", hex));
    }
    region.token[i] = static_cast<uint8_t>(byte);
  }
  return region;
}

}  // namespace

std::vector<std::string> split_pod_ids(std::string_view text) {
  std::vector<std::string> ids;
  while (!text.empty()) {
    size_t comma = text.find(',');
    ids.emplace_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return ids;
}

Result<PlacementRequest> parse_placement(std::string_view text) {
  PlacementRequest request;
  bool saw_pods = false, saw_stripe = false;
  Status read = for_each_setting(text, "placement", [&](std::string_view key, std::string_view value) -> Status {
    if (key == "pods" && !saw_pods) {
      saw_pods = true;
      if (all_digits(value)) {
        if (value.size() > 4 || std::stoul(std::string(value)) == 0) {
          return fail(ErrorCode::kInvalidArgument, fmt::format("placement: pods={} is not a count of pods", value));
        }
        request.pod_count = static_cast<unsigned>(std::stoul(std::string(value)));
        return {};
      }
      request.pod_ids = split_pod_ids(value);
      for (const auto& id : request.pod_ids) {
        VMPOD_TRY_CTX(check_pod_id(id), "placement");
        if (std::count(request.pod_ids.begin(), request.pod_ids.end(), id) > 1) {
          return fail(ErrorCode::kInvalidArgument, "placement: pod " + id + " named twice");
        }
      }
      return {};
    }
    if (key == "stripe" && !saw_stripe) {
      saw_stripe = true;
      auto stripe = parse_stripe(value);
      if (!stripe) return fail(stripe.error().context("placement"));
      request.stripe_bytes = *stripe;
      return {};
    }
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("placement: '{}' is {} (pods= and stripe= only)", key,
                            key == "pods" || key == "stripe" ? "given twice" : "unknown"));
  });
  if (!read) return fail(read.error());
  if (!saw_pods && !saw_stripe) return fail(ErrorCode::kInvalidArgument, "placement: empty (pods= or stripe=)");
  return request;
}

std::string format_placement(const std::vector<std::string>& pod_ids, uint64_t stripe_bytes) {
  return fmt::format("pods={} stripe={}", fmt::join(pod_ids, ","), stripe_bytes);
}


std::string format_handover(const FileHandover& file) {
  std::string regions;
  for (size_t i = 0; i < file.regions.size() && i < file.pod_ids.size(); ++i) {
    if (i > 0) regions.push_back(',');
    regions += fmt::format("{}:{}:{:02x}", file.pod_ids[i], file.regions[i].id, fmt::join(file.regions[i].token, ""));
  }
  return fmt::format("size={} stripe={} regions={}", file.size, file.stripe_bytes, regions);
}

Result<FileHandover> parse_handover(std::string_view text) {
  FileHandover file;
  bool saw_size = false, saw_stripe = false, saw_regions = false;
  Status read = for_each_setting(text, "regions", [&](std::string_view key, std::string_view value) -> Status {
    if (key == "size" && !saw_size) {
      saw_size = true;
      if (!all_digits(value) || value.size() > 19) {
        return fail(ErrorCode::kInvalidArgument, fmt::format("regions: size={} is not a byte count", value));
      }
      file.size = std::stoull(std::string(value));
      return {};
    }
    if (key == "stripe" && !saw_stripe) {
      saw_stripe = true;
      auto stripe = parse_stripe(value);
      if (!stripe) return fail(stripe.error().context("regions"));
      file.stripe_bytes = *stripe;
      return {};
    }
    if (key == "regions" && !saw_regions) {
      saw_regions = true;
      for (const std::string& entry : split_pod_ids(value)) {
        size_t colon = entry.find(':');
        std::string pod = entry.substr(0, colon);
        VMPOD_TRY_CTX(check_pod_id(pod), "regions");
        if (std::count(file.pod_ids.begin(), file.pod_ids.end(), pod) > 0) {
          return fail(ErrorCode::kInvalidArgument, "regions: pod " + pod + " named twice");
        }
        if (colon == std::string::npos) return fail(ErrorCode::kInvalidArgument, "regions: '" + entry + "' is not POD:ID:TOKEN");
        auto region = parse_region(std::string_view(entry).substr(colon + 1));
        if (!region) return fail(region.error().context("regions: pod " + pod));
        file.pod_ids.push_back(std::move(pod));
        file.regions.push_back(*region);
      }
      return {};
    }
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("regions: '{}' is {} (size=, stripe= and regions= only)", key,
                            key == "size" || key == "stripe" || key == "regions" ? "given twice" : "unknown"));
  });
  if (!read) return fail(read.error());
  if (!saw_size || !saw_stripe || !saw_regions) {
    return fail(ErrorCode::kInvalidArgument, "regions: size=, stripe= and regions= are all needed");
  }
  return file;
}

Result<std::pair<std::string, FileHandover>> parse_adoption(std::string_view text) {
  size_t begin = text.find_first_not_of(" \t\n");
  if (begin == std::string_view::npos) return fail(ErrorCode::kInvalidArgument, "adopt: empty (NAME size=... stripe=... regions=...)");
  text.remove_prefix(begin);
  std::string name(text.substr(0, text.find_first_of(" \t\n")));
  if (name == "." || name == ".." || name.find('/') != std::string::npos || name.find('=') != std::string::npos ||
      name.size() > 255) {
    return fail(ErrorCode::kInvalidArgument, "adopt: '" + name + "' is not a file name");
  }
  auto file = parse_handover(text.substr(name.size()));
  if (!file) return fail(file.error().context("adopt " + name));
  return std::make_pair(std::move(name), std::move(*file));
}

}  // namespace vmpod::cpuserver
