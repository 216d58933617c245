// QEMU's JSON writer (qobject/json-writer.c) for nlohmann::json values.
#include <cmath>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include <vmpod/qmp/qmp_protocol.h>

#include "qemu_compat.h"

namespace vmpod::qmp {
namespace {

void write_string(std::string& out, const std::string& text) {
  out += '"';
  for (size_t i = 0; i < text.size();) {
    size_t length = 1;
    // A NUL byte is U+0000: QEMU holds it as "\xC0\x80" and writes \u0000.
    int64_t cp = text[i] == '\0' ? 0 : mod_utf8_codepoint(std::string_view(text).substr(i), &length);
    i += length;
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (cp < 0) cp = 0xFFFD;
        if (cp > 0xFFFF) {
          fmt::format_to(std::back_inserter(out), "\\u{:04X}\\u{:04X}", 0xD800 + ((cp - 0x10000) >> 10),
                         0xDC00 + ((cp - 0x10000) & 0x3FF));
        } else if (cp < 0x20 || cp >= 0x7F) {
          fmt::format_to(std::back_inserter(out), "\\u{:04X}", cp);
        } else {
          out += static_cast<char>(cp);
        }
    }
  }
  out += '"';
}

void write_double(std::string& out, double value) {
  if (!std::isfinite(value)) {
    out += "null";  // QEMU would write "inf", which no JSON parser takes
    return;
  }
  char text[32];
  int length = std::snprintf(text, sizeof(text), "%.17g", value);
  out.append(text, static_cast<size_t>(length));
}

void write_value(std::string& out, const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded: out += "null"; break;
    case nlohmann::json::value_t::boolean: out += value.get<bool>() ? "true" : "false"; break;
    case nlohmann::json::value_t::number_integer:
      fmt::format_to(std::back_inserter(out), "{}", value.get<int64_t>());
      break;
    case nlohmann::json::value_t::number_unsigned:
      fmt::format_to(std::back_inserter(out), "{}", value.get<uint64_t>());
      break;
    case nlohmann::json::value_t::number_float: write_double(out, value.get<double>()); break;
    case nlohmann::json::value_t::string: write_string(out, value.get_ref<const std::string&>()); break;
    case nlohmann::json::value_t::binary: {
      // Never parsed from JSON; written as its bytes so nothing is lost.
      nlohmann::json bytes = nlohmann::json::array();
      for (uint8_t byte : value.get_binary()) bytes.push_back(byte);
      write_value(out, bytes);
      break;
    }
    case nlohmann::json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& element : value) {
        if (!first) out += ", ";
        first = false;
        write_value(out, element);
      }
      out += ']';
      break;
    }
    case nlohmann::json::value_t::object: {
      out += '{';
      bool first = true;
      for (const Member* member : qdict_order(value)) {
        if (!first) out += ", ";
        first = false;
        write_string(out, member->first);
        out += ": ";
        write_value(out, member->second);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string qmp_json_text(const nlohmann::json& value) {
  std::string out;
  write_value(out, value);
  return out;
}

}  // namespace vmpod::qmp
