#include <vmpod/cpuserver/podfs_placement.h>

#include <algorithm>
#include <cctype>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <vmpod/base/units.h>

namespace vmpod::cpuserver {

namespace {

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
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
  while (!text.empty()) {
    size_t begin = text.find_first_not_of(" \t\n");
    if (begin == std::string_view::npos) break;
    text.remove_prefix(begin);
    std::string_view word = text.substr(0, text.find_first_of(" \t\n"));
    text.remove_prefix(word.size());
    size_t equals = word.find('=');
    std::string_view key = word.substr(0, equals);
    std::string_view value = equals == std::string_view::npos ? std::string_view{} : word.substr(equals + 1);
    if (value.empty()) return fail(ErrorCode::kInvalidArgument, fmt::format("placement: '{}' is not KEY=VALUE", word));
    if (key == "pods" && !saw_pods) {
      saw_pods = true;
      if (all_digits(value)) {
        if (value.size() > 4 || std::stoul(std::string(value)) == 0) {
          return fail(ErrorCode::kInvalidArgument, fmt::format("placement: pods={} is not a count of pods", value));
        }
        request.pod_count = static_cast<unsigned>(std::stoul(std::string(value)));
      } else {
        request.pod_ids = split_pod_ids(value);
        for (const auto& id : request.pod_ids) {
          bool well_formed = !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
          });
          if (!well_formed) return fail(ErrorCode::kInvalidArgument, "placement: '" + id + "' is not a pod id");
          if (std::count(request.pod_ids.begin(), request.pod_ids.end(), id) > 1) {
            return fail(ErrorCode::kInvalidArgument, "placement: pod " + id + " named twice");
          }
        }
      }
    } else if (key == "stripe" && !saw_stripe) {
      saw_stripe = true;
      auto stripe = parse_size(value);
      if (!stripe) return fail(stripe.error().context("placement: stripe"));
      if (*stripe == 0 || *stripe % 4096 != 0) {
        return fail(ErrorCode::kInvalidArgument, fmt::format("placement: stripe={} is not a multiple of 4 KiB", value));
      }
      request.stripe_bytes = *stripe;
    } else {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("placement: '{}' is {} (pods= and stripe= only)", key,
                              key == "pods" || key == "stripe" ? "given twice" : "unknown"));
    }
  }
  if (!saw_pods && !saw_stripe) return fail(ErrorCode::kInvalidArgument, "placement: empty (pods= or stripe=)");
  return request;
}

std::string format_placement(const std::vector<std::string>& pod_ids, uint64_t stripe_bytes) {
  return fmt::format("pods={} stripe={}", fmt::join(pod_ids, ","), stripe_bytes);
}

}  // namespace vmpod::cpuserver
