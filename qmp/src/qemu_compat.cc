#include "qemu_compat.h"

#include <algorithm>
#include <utility>

namespace vmpod::qmp {

bool is_valid_codepoint(int64_t codepoint) {
  if (codepoint < 0 || codepoint > 0x10FFFF) return false;
  if ((codepoint >= 0xFDD0 && codepoint <= 0xFDEF) || (codepoint & 0xFFFE) == 0xFFFE) {
    return false;  // noncharacter
  }
  return codepoint < 0xD800 || codepoint > 0xDFFF;
}

int64_t mod_utf8_codepoint(std::string_view text, size_t* length) {
  static constexpr int64_t kMinCodepoint[5] = {0x80, 0x800, 0x10000, 0x200000, 0x4000000};
  const auto byte_at = [&](size_t i) -> unsigned {
    return i < text.size() ? static_cast<unsigned char>(text[i]) : 0;
  };
  unsigned lead = byte_at(0);
  *length = 1;
  if (lead < 0x80) return lead;
  if (lead >= 0xFE || (lead & 0x40) == 0) return -1;  // impossible byte or stray continuation
  size_t sequence = 0;
  unsigned mask = 0x80;
  for (; lead & mask; mask >>= 1) ++sequence;
  int64_t codepoint = lead & (mask - 1);
  for (size_t i = 1; i < sequence; ++i) {
    unsigned next = byte_at(i);
    if ((next & 0xC0) != 0x80) return -1;  // the missing continuation byte is not consumed
    *length = i + 1;
    codepoint = (codepoint << 6) | (next & 0x3F);
  }
  if (!is_valid_codepoint(codepoint)) return -1;
  if (codepoint < kMinCodepoint[sequence - 2] && !(codepoint == 0 && sequence == 2)) return -1;
  return codepoint;
}

void append_utf8(std::string& out, int64_t codepoint) {
  auto cp = static_cast<uint32_t>(codepoint);
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

namespace {

// QDict's bucket for key: tdb_hash() modulo QDICT_BUCKET_MAX (qobject/qdict.c).
unsigned qdict_bucket(const std::string& key) {
  uint32_t value = 0x238F13AFu * static_cast<uint32_t>(key.size());
  for (size_t i = 0; i < key.size(); ++i) {
    value += static_cast<uint32_t>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
  }
  return (1103515243u * value + 12345u) % 512u;
}

}  // namespace

std::vector<const Member*> qdict_order(const nlohmann::json& object) {
  std::vector<std::pair<unsigned, const Member*>> keyed;
  keyed.reserve(object.size());
  for (const auto& member : object.get_ref<const nlohmann::json::object_t&>()) {
    keyed.emplace_back(qdict_bucket(member.first), &member);
  }
  // Within a bucket QEMU puts the last-inserted key first; insertion order
  // is gone from a parsed object, so name order stands in for it.
  std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second->first < b.second->first;
  });
  std::vector<const Member*> members;
  members.reserve(keyed.size());
  for (const auto& entry : keyed) members.push_back(entry.second);
  return members;
}

}  // namespace vmpod::qmp
