// parse_duration over what people write in plans and flags (and what they
// must not), and format_duration over the unit boundaries.
#include <criterion/criterion.h>

#include <chrono>
#include <cstdint>
#include <string>

#include <vmpod/base/duration.h>

using namespace vmpod;
using std::chrono::milliseconds;

namespace {

struct Good {
  const char* text;
  int64_t ms;
};

constexpr int64_t kSecond = 1000, kMinute = 60 * kSecond, kHour = 60 * kMinute;

constexpr Good kGood[] = {
    {"0", 0},
    {"0ms", 0},
    {"1ms", 1},
    {"500ms", 500},
    {"1s", kSecond},
    {"30s", 30 * kSecond},
    {"90s", 90 * kSecond},
    {"5m", 5 * kMinute},
    {"5min", 5 * kMinute},
    {"1h", kHour},
    {"48h", 48 * kHour},
    // A bare number is seconds.
    {"1", kSecond},
    {"30", 30 * kSecond},
    {"007", 7 * kSecond},
    // The largest of each unit that still fits in int64 milliseconds.
    {"9223372036854775807ms", INT64_MAX},
    {"9223372036854775s", 9223372036854775ll * kSecond},
    {"153722867280912m", 153722867280912ll * kMinute},
    {"2562047788015h", 2562047788015ll * kHour},
};

const char* const kBad[] = {
    "",
    "s",
    "ms",
    "5x",
    "5sec",
    "5S",         // units are lower-case
    "5M",
    "5H",
    "5 s",
    " 5s",
    "5s ",
    "-1s",
    "-1",
    "+1s",
    "2.5s",       // no fractions
    "1.5",
    "1h30m",      // one unit only
    "1m30s",
    "5mss",
    "0x10s",
    "9223372036854775808ms",  // 2^63
    "9223372036854776s",
    "153722867280913m",
    "2562047788016h",
    "18446744073709551616",   // 2^64: from_chars itself overflows
    "99999999999999999999999h",
};

}  // namespace

Test(duration, parse_accepts) {
  for (const Good& row : kGood) {
    auto got = parse_duration(row.text);
    cr_expect(got.has_value(), "'%s' refused: %s", row.text, got ? "" : got.error().message().c_str());
    if (got) {
      cr_expect_eq(got->count(), row.ms, "'%s' = %lld ms, want %lld", row.text,
                   static_cast<long long>(got->count()), static_cast<long long>(row.ms));
    }
  }
}

Test(duration, parse_refuses_and_quotes_the_text) {
  for (const char* text : kBad) {
    auto got = parse_duration(text);
    cr_expect(!got.has_value(), "'%s' parsed as %lld ms", text,
              got ? static_cast<long long>(got->count()) : 0ll);
    if (!got) {
      cr_expect_eq(got.error().code(), ErrorCode::kInvalidArgument, "'%s'", text);
      cr_expect(got.error().message().find(std::string("'") + text + "'") != std::string::npos,
                "message for '%s' does not quote it: %s", text, got.error().message().c_str());
      cr_expect(got.error().message().find("30s") != std::string::npos,
                "message for '%s' shows no example: %s", text, got.error().message().c_str());
    }
  }
}

Test(duration, refusals_say_why) {
  struct Row {
    const char* text;
    const char* why;
  };
  const Row rows[] = {
      {"", "no number"},
      {"-1s", "no number"},
      {"5x", "unknown unit 'x'"},
      {"2.5s", "unknown unit '.5s'"},
      {"9223372036854776s", "too long"},
      {"2562047788016h", "too long"},
  };
  for (const Row& row : rows) {
    auto got = parse_duration(row.text);
    cr_assert(!got.has_value(), "'%s' parsed", row.text);
    cr_expect(got.error().message().find(row.why) != std::string::npos, "'%s': '%s', want '%s'", row.text,
              got.error().message().c_str(), row.why);
  }
}

Test(duration, format) {
  struct Row {
    int64_t ms;
    const char* text;
  };
  const Row rows[] = {
      {0, "0ms"},
      {1, "1ms"},
      {250, "250ms"},
      {999, "999ms"},
      {1001, "1001ms"},   // not a whole second: all in ms
      {90500, "90500ms"},
      {kSecond, "1s"},
      {30 * kSecond, "30s"},
      {59 * kSecond, "59s"},
      {kMinute, "1m"},
      {kMinute + kSecond, "1m1s"},
      {5 * kMinute, "5m"},
      {59 * kMinute + 59 * kSecond, "59m59s"},
      {kHour, "1h"},
      {kHour + kSecond, "1h1s"},
      {kHour + 30 * kMinute, "1h30m"},
      {2 * kHour + 3 * kMinute + 4 * kSecond, "2h3m4s"},
      {100 * kHour, "100h"},
  };
  for (const Row& row : rows) {
    std::string got = format_duration(milliseconds(row.ms));
    cr_expect_eq(got, std::string(row.text), "%lld ms: '%s', want '%s'", static_cast<long long>(row.ms),
                 got.c_str(), row.text);
  }
}

// What format_duration prints for a single unit parses back to the same value.
Test(duration, format_then_parse_single_units) {
  for (int64_t ms : {int64_t{1}, int64_t{500}, int64_t{1001}, kSecond, 45 * kSecond, kMinute, 10 * kMinute, kHour, 36 * kHour}) {
    std::string text = format_duration(milliseconds(ms));
    auto back = parse_duration(text);
    cr_expect(back.has_value(), "%lld ms printed as '%s', which does not parse", static_cast<long long>(ms),
              text.c_str());
    if (back) cr_expect_eq(back->count(), ms, "'%s'", text.c_str());
  }
}
