// Two QEMU internals that decide what goes on the wire, reproduced exactly:
// its modified-UTF-8 decoder (util/unicode.c), which both its JSON parser
// and writer use, and the member order of a QDict, which is the order QEMU
// writes members and the order qmp_dispatch() checks them in (so which
// error a request with several faults gets).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace vmpod::qmp {

// A Unicode scalar value that is not a noncharacter (QEMU's
// is_valid_codepoint()).
bool is_valid_codepoint(int64_t codepoint);

// QEMU's mod_utf8_codepoint(): the code point at text[0] (text non-empty),
// -1 if the sequence there is invalid; *length gets the bytes it spans,
// at least 1. Overlong forms are invalid except "\xC0\x80" for U+0000.
int64_t mod_utf8_codepoint(std::string_view text, size_t* length);

// Appends codepoint (valid) as UTF-8; U+0000 as a NUL byte.
void append_utf8(std::string& out, int64_t codepoint);

// The members of object in the order a QDict holding them iterates.
using Member = nlohmann::json::object_t::value_type;
std::vector<const Member*> qdict_order(const nlohmann::json& object);

}  // namespace vmpod::qmp
