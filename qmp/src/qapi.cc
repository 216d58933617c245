#include <vmpod/qmp/qapi.h>

#include <cstdint>
#include <set>

#include <fmt/format.h>

#include "qemu_compat.h"

namespace vmpod::qmp {

namespace {

std::string member_path(const std::string& parent, std::string_view member) {
  return parent.empty() ? std::string(member) : fmt::format("{}.{}", parent, member);
}

std::string invalid_type(const std::string& path, std::string_view expected) {
  return fmt::format("Invalid parameter type for '{}', expected: {}", path, expected);
}

// QEMU's words for a builtin's JSON type. Integers must also fit the
// builtin's range, so that what passes converts to it unchanged: QEMU
// takes a negative uint64 for compatibility, vmpod's schema does not.
std::optional<std::string> check_builtin(std::string_view name, std::string_view json_type,
                                         const nlohmann::json& value, const std::string& path) {
  if (json_type == "string") {
    if (!value.is_string()) return invalid_type(path, "string");
  } else if (json_type == "int") {
    if (!value.is_number_integer()) return invalid_type(path, "integer");
    const bool fits = name == "uint64" ? value.is_number_unsigned() || value.get<int64_t>() >= 0
                                       : !value.is_number_unsigned() || value.get<uint64_t>() <= INT64_MAX;
    if (!fits) return fmt::format("Parameter '{}' expects {}", path, name == "uint64" ? "uint64" : "int64");
  } else if (json_type == "boolean") {
    if (!value.is_boolean()) return invalid_type(path, "boolean");
  } else if (json_type == "number") {
    if (!value.is_number()) return invalid_type(path, "number");
  } else if (json_type == "null") {
    if (!value.is_null()) return invalid_type(path, "null");
  }
  return std::nullopt;  // "value": anything
}

}  // namespace

SchemaIndex::SchemaIndex(const nlohmann::json& introspection) {
  for (const nlohmann::json& info : introspection) entries_.emplace(info.at("name").get<std::string>(), info);
}

const nlohmann::json* SchemaIndex::find(std::string_view name) const {
  auto found = entries_.find(name);
  return found == entries_.end() ? nullptr : &found->second;
}

std::optional<std::string> SchemaIndex::check_arguments(std::string_view command,
                                                        const nlohmann::json& arguments) const {
  const nlohmann::json* info = find(command);
  if (info == nullptr || info->value("meta-type", "") != "command") return std::nullopt;
  return check_value(info->value("arg-type", ""), arguments, "");
}

std::optional<std::string> SchemaIndex::check_value(std::string_view type, const nlohmann::json& value,
                                                    const std::string& what) const {
  const nlohmann::json* info = find(type);
  if (info == nullptr) return fmt::format("'{}' has no type '{}' in the schema", what, type);
  return check(*info, value, what);
}

std::optional<std::string> SchemaIndex::check(const nlohmann::json& info, const nlohmann::json& value,
                                              const std::string& path) const {
  const std::string meta = info.value("meta-type", "");
  if (meta == "builtin") return check_builtin(info.value("name", ""), info.value("json-type", ""), value, path);
  if (meta == "enum") {
    if (!value.is_string()) return invalid_type(path, "string");
    for (const nlohmann::json& allowed : info.at("values")) {
      if (allowed == value) return std::nullopt;
    }
    return fmt::format("Parameter '{}' does not accept value '{}'", path, value.get<std::string>());
  }
  if (meta == "array") {
    if (!value.is_array()) return invalid_type(path, "array");
    const nlohmann::json* element = find(info.value("element-type", ""));
    if (element == nullptr) return fmt::format("'{}' has an unknown element type", path);
    for (size_t i = 0; i < value.size(); ++i) {
      if (auto error = check(*element, value[i], fmt::format("{}[{}]", path, i))) return error;
    }
    return std::nullopt;
  }
  if (meta == "object") {
    if (!value.is_object()) return invalid_type(path.empty() ? "arguments" : path, "object");
    std::set<std::string, std::less<>> declared;
    for (const nlohmann::json& member : info.at("members")) {
      const std::string name = member.at("name");
      declared.insert(name);
      const std::string child = member_path(path, name);
      auto present = value.find(name);
      if (present == value.end()) {
        if (member.contains("default")) continue;  // optional
        return fmt::format("Parameter '{}' is missing", child);
      }
      const nlohmann::json* type = find(member.value("type", ""));
      if (type == nullptr) return fmt::format("'{}' has an unknown type", child);
      if (auto error = check(*type, *present, child)) return error;
    }
    for (const Member* member : qdict_order(value)) {
      if (!declared.contains(member->first)) {
        return fmt::format("Parameter '{}' is unexpected", member_path(path, member->first));
      }
    }
    return std::nullopt;
  }
  return fmt::format("'{}' has a type of meta-type '{}', which takes no value", path, meta);
}

std::optional<std::string> SchemaIndex::return_type(std::string_view command) const {
  const nlohmann::json* info = find(command);
  if (info == nullptr || info->value("meta-type", "") != "command") return std::nullopt;
  return info->value("ret-type", "");
}

std::optional<std::string> SchemaIndex::event_type(std::string_view event) const {
  const nlohmann::json* info = find(event);
  if (info == nullptr || info->value("meta-type", "") != "event") return std::nullopt;
  return info->value("arg-type", "");
}

nlohmann::json merge_schema(const nlohmann::json& qemu, const nlohmann::json& ours) {
  nlohmann::json merged = qemu.is_array() ? qemu : nlohmann::json::array();
  std::set<std::string, std::less<>> names;
  for (const nlohmann::json& info : merged) {
    if (info.is_object()) names.insert(info.value("name", ""));
  }
  for (const nlohmann::json& info : ours) {
    if (names.insert(info.value("name", "")).second) merged.push_back(info);
  }
  return merged;
}

}  // namespace vmpod::qmp
