// parse_size over a table of what people type (and what they must not), and
// format_bytes over the unit boundaries.
#include <criterion/criterion.h>

#include <cstdint>
#include <string>

#include <vmpod/base/units.h>

using namespace vmpod;

namespace {

struct Good {
  const char* text;
  uint64_t bytes;
};

constexpr uint64_t kKiB = 1024, kMiB = kKiB << 10, kGiB = kMiB << 10, kTiB = kGiB << 10;

constexpr Good kGood[] = {
    {"0", 0},
    {"1", 1},
    {"4096", 4096},
    {"10B", 10},
    {"10b", 10},
    {"1K", kKiB},
    {"1k", kKiB},
    {"1KB", kKiB},
    {"1KiB", kKiB},
    {"1kib", kKiB},
    {"256M", 256 * kMiB},
    {"256MiB", 256 * kMiB},
    {"3mb", 3 * kMiB},
    {"2G", 2 * kGiB},
    {"2GiB", 2 * kGiB},
    {"1T", kTiB},
    {"1TiB", kTiB},
    {"0T", 0},
    {"18446744073709551615", UINT64_MAX},
    // The largest value of each unit that still fits in 64 bits.
    {"17179869183G", 17179869183ull * kGiB},
    {"16777215T", 16777215ull * kTiB},
    {"18014398509481983K", 18014398509481983ull * kKiB},
};

const char* const kBad[] = {
    "",
    "K",
    "MiB",
    "-1",
    "+1",
    " 1",
    "1 ",
    "1 M",
    "1.5G",
    "1,000",
    "1P",        // no petabytes
    "1E",
    "1X",
    "1KK",
    "1iB",
    "1Mi",
    "1MIBB",
    "1BB",       // a byte unit twice
    "1BiB",
    "0x10",
    "18446744073709551616",  // 2^64
    "99999999999999999999999",
    "16777216T",             // 2^64 bytes
    "17179869184G",
    "18014398509481984K",
    "17592186044416M",
};

}  // namespace

Test(units, parse_size_accepts) {
  for (const Good& row : kGood) {
    auto got = parse_size(row.text);
    cr_expect(got.has_value(), "'%s' refused: %s", row.text,
              got ? "" : got.error().message().c_str());
    if (got) {
      cr_expect_eq(*got, row.bytes, "'%s' = %llu, want %llu", row.text,
                   static_cast<unsigned long long>(*got),
                   static_cast<unsigned long long>(row.bytes));
    }
  }
}

Test(units, parse_size_refuses) {
  for (const char* text : kBad) {
    auto got = parse_size(text);
    cr_expect(!got.has_value(), "'%s' parsed as %llu", text,
              got ? static_cast<unsigned long long>(*got) : 0ull);
    if (!got) {
      cr_expect_eq(got.error().code(), ErrorCode::kInvalidArgument, "'%s'", text);
      cr_expect(got.error().message().find(std::string("'") + text + "'") != std::string::npos,
                "message for '%s' does not quote it: %s", text, got.error().message().c_str());
    }
  }
}

Test(units, overflow_says_too_large) {
  auto got = parse_size("16777216T");
  cr_assert(!got.has_value());
  cr_expect(got.error().message().find("too large") != std::string::npos, "%s",
            got.error().message().c_str());
}

Test(units, format_bytes) {
  struct Row {
    uint64_t bytes;
    const char* text;
  };
  const Row rows[] = {
      {0, "0 B"},
      {100, "100 B"},
      {1023, "1023 B"},
      {1024, "1.0 KiB"},
      {1536, "1.5 KiB"},
      {12 * kKiB, "12 KiB"},
      {1023 * kKiB, "1023 KiB"},
      {kMiB, "1.0 MiB"},
      {256 * kMiB, "256 MiB"},
      {kGiB + kGiB / 2, "1.5 GiB"},
      {kTiB, "1.0 TiB"},
      {2048 * kTiB, "2048 TiB"},  // no unit past TiB
      {UINT64_MAX, "16777216 TiB"},
  };
  for (const Row& row : rows) {
    cr_expect_eq(format_bytes(row.bytes), std::string(row.text), "%llu: '%s', want '%s'",
                 static_cast<unsigned long long>(row.bytes), format_bytes(row.bytes).c_str(),
                 row.text);
  }
}

Test(units, format_then_parse_whole_units) {
  for (uint64_t n : {1ull, 7ull, 512ull}) {
    for (const char* unit : {"K", "M", "G", "T"}) {
      std::string text = std::to_string(n) + unit;
      auto parsed = parse_size(text);
      cr_assert(parsed.has_value(), "%s", text.c_str());
      std::string shown = format_bytes(*parsed);
      cr_expect(shown.find(std::string(unit) + "iB") != std::string::npos, "%s shown as %s",
                text.c_str(), shown.c_str());
    }
  }
}
