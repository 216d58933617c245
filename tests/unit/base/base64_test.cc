// RFC 4648 section 10 test vectors, binary round trips, and input that is
// not padded base64.
#include <criterion/criterion.h>

#include <string>

#include <vmpod/base/base64.h>

using namespace vmpod;

namespace {

struct Vector {
  const char* plain;
  const char* encoded;
};

constexpr Vector kRfc4648[] = {
    {"", ""},         {"f", "Zg=="},        {"fo", "Zm8="},         {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

}  // namespace

Test(base64, rfc4648_encode) {
  for (const Vector& v : kRfc4648) {
    cr_expect_eq(base64_encode(v.plain), std::string(v.encoded), "encode(\"%s\") = %s, want %s",
                 v.plain, base64_encode(v.plain).c_str(), v.encoded);
  }
}

Test(base64, rfc4648_decode) {
  for (const Vector& v : kRfc4648) {
    auto decoded = base64_decode(v.encoded);
    cr_assert(decoded.has_value(), "decode(\"%s\") failed", v.encoded);
    cr_expect_eq(*decoded, std::string(v.plain), "decode(\"%s\") = %s", v.encoded,
                 decoded->c_str());
  }
}

Test(base64, every_byte_round_trips) {
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  for (size_t len = 0; len <= all.size(); len += 1) {
    std::string plain = all.substr(256 - len);
    std::string encoded = base64_encode(plain);
    cr_assert_eq(encoded.size(), (len + 2) / 3 * 4);
    auto decoded = base64_decode(encoded);
    cr_assert(decoded.has_value(), "length %zu did not decode", len);
    cr_assert(*decoded == plain, "length %zu did not round trip", len);
  }
}

Test(base64, high_bytes_use_the_whole_alphabet) {
  cr_expect_eq(base64_encode(std::string("\xfb\xff\xbf", 3)), std::string("+/+/"));
  cr_expect_eq(base64_encode(std::string(3, '\0')), std::string("AAAA"));
}

Test(base64, rejects_invalid_input) {
  const char* bad[] = {
      "Z",          // not a multiple of 4
      "Zg=",        // short padding
      "Zm9vY",      // 5 characters
      "Zg=a",       // data after padding
      "=Zg=",       // padding first
      "Z===",       // three padding characters
      "====",       // all padding
      "Zg==Zg==",   // padding before the end
      "Zm9v====",   // a whole group of padding
      "Zm9\n",      // newline
      "Zm 9",       // space
      "Zm9-",       // url-safe alphabet
      "Zm9_",
      "Zm9\xc3",    // non-ASCII
  };
  for (const char* text : bad) {
    cr_expect(!base64_decode(text).has_value(), "\"%s\" decoded", text);
  }
  cr_expect(!base64_decode(std::string("Zm\0v", 4)).has_value(), "embedded NUL decoded");
}
