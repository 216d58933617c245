// JsonStreamer: value boundaries across reads, strings that hide brackets,
// QEMU's extensions, limits, resynchronization after garbage, and QEMU
// 7.2's own answers to malformed input (every expected text below was read
// from a live qemu-system-x86_64 7.2; qemu_differential_test replays them).
#include <criterion/criterion.h>

#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include <vmpod/qmp/qmp_protocol.h>

using namespace vmpod::qmp;
using namespace std::string_literals;

namespace {

// "V:" + the value as QEMU writes it, or "E:" + the error's desc.
std::string describe(const JsonInput& input) {
  if (const auto* error = std::get_if<JsonParseError>(&input)) return "E:" + error->desc;
  return "V:" + qmp_json_text(std::get<nlohmann::json>(input));
}

std::vector<std::string> parse(std::string_view bytes, size_t chunk = 0,
                               size_t max_value_bytes = kDefaultMaxValueBytes) {
  JsonStreamer streamer(max_value_bytes);
  std::vector<JsonInput> inputs;
  if (chunk == 0) chunk = bytes.size() == 0 ? 1 : bytes.size();
  for (size_t at = 0; at < bytes.size(); at += chunk) streamer.feed(bytes.substr(at, chunk), inputs);
  std::vector<std::string> out;
  for (const auto& input : inputs) out.push_back(describe(input));
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += "[" + item + "]";
  return out;
}

void expect_parse(std::string_view bytes, const std::vector<std::string>& expected) {
  for (size_t chunk : {size_t{0}, size_t{1}, size_t{3}}) {
    auto got = parse(bytes, chunk);
    cr_expect(got == expected, "input %s (chunk %zu):\n got      %s\n expected %s",
              nlohmann::json(std::string(bytes)).dump(-1, ' ', false,
                                                      nlohmann::json::error_handler_t::replace)
                  .c_str(),
              chunk, join(got).c_str(), join(expected).c_str());
  }
}

}  // namespace

Test(json_streamer, objects_split_across_reads_and_several_per_read) {
  const std::string input = R"({"execute":"a","id":1}{"execute":"b"}
  {"execute" :
    "c", "arguments": {"x": [1, 2, {"y": null}]}}   [true,false])";
  const std::vector<std::string> expected = {
      R"(V:{"execute": "a", "id": 1})", R"(V:{"execute": "b"})",
      R"(V:{"execute": "c", "arguments": {"x": [1, 2, {"y": null}]}})", "V:[true, false]"};
  for (size_t chunk = 1; chunk <= input.size(); ++chunk) {
    cr_assert(parse(input, chunk) == expected, "chunk %zu: %s", chunk, join(parse(input, chunk)).c_str());
  }
}

Test(json_streamer, strings_hide_brackets_and_escaped_quotes) {
  expect_parse(R"({"a":"}{][\"]\\","b":'x}"y\'z'})",
               {R"(V:{"a": "}{][\"]\\", "b": "x}\"y'z"})"});
  expect_parse(R"(["\u00e9\ud83d\ude00\/\b\f\n\r\t"])", {R"(V:["\u00E9\uD83D\uDE00/\b\f\n\r\t"])"});
}

Test(json_streamer, qemu_extensions) {
  expect_parse("'a\"b'", {R"(V:"a\"b")"});
  expect_parse(R"("a\'b")", {R"(V:"a'b")"});
  expect_parse("\"\xc0\x80\"", {R"(V:"\u0000")"});  // modified UTF-8 NUL
  expect_parse(R"("\u0000")", {R"(V:"\u0000")"});
}

Test(json_streamer, numbers_as_qemu_reads_them) {
  JsonStreamer streamer;
  std::vector<JsonInput> inputs;
  streamer.feed("[-0, 9223372036854775807, 12345678901234567890, -12345678901234567890, 1e999, 0.5e-3]",
                inputs);
  cr_assert_eq(inputs.size(), 1u);
  const auto& values = std::get<nlohmann::json>(inputs[0]);
  cr_expect(values[0].is_number_integer() && values[0] == 0);
  cr_expect(values[1].get<int64_t>() == INT64_MAX);
  cr_expect(values[2].is_number_unsigned() && values[2].get<uint64_t>() == 12345678901234567890u);
  cr_expect(values[3].is_number_float());
  cr_expect(std::isinf(values[4].get<double>()));
  cr_expect(values[5].get<double>() == 0.5e-3);
}

// Each row: input, then what QEMU 7.2 answers it with, in order.
Test(json_streamer, malformed_input_as_qemu) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> table = {
      {R"({"a":1}})", {R"(V:{"a": 1})", "E:JSON parse error, expecting value"}},
      {"}\n", {"E:JSON parse error, expecting value"}},
      {"]", {"E:JSON parse error, expecting value"}},
      {"[1,]", {"E:JSON parse error, expecting value"}},
      {"[,1]", {"E:JSON parse error, expecting value"}},
      {"{,}", {"E:JSON parse error, expecting value"}},
      {R"({"a":})", {"E:JSON parse error, expecting value"}},
      {R"({"execute":"x",})", {"E:JSON parse error, expecting value"}},
      {"{1:2}", {"E:JSON parse error, key is not a string in object"}},
      {"{true:1}", {"E:JSON parse error, key is not a string in object"}},
      {R"({{"a":1}:2})", {"E:JSON parse error, key is not a string in object"}},
      {R"({{"a" 1}:2})", {"E:JSON parse error, missing : in object pair"}},
      {R"({"execute" "x"})", {"E:JSON parse error, missing : in object pair"}},
      {R"({"a":1 "b"})", {"E:JSON parse error, expected separator in dict"}},
      {"[1 2]", {"E:JSON parse error, expected separator in list"}},
      {"[1a]", {"E:JSON parse error, expected separator in list"}},
      {"[{]}", {"E:JSON parse error, expecting value"}},
      {R"({"a":1,"a":2,})", {"E:JSON parse error, duplicate key"}},
      {R"({"execute":"query-status","id":1,"id":2})", {"E:JSON parse error, duplicate key"}},
      {"{bad json}\n", {"E:JSON parse error, invalid keyword 'bad'"}},
      {"{bad:1}", {"E:JSON parse error, invalid keyword 'bad'"}},
      {"nul\n", {"E:JSON parse error, invalid keyword 'nul'"}},
      {"nullx\n", {"E:JSON parse error, invalid keyword 'nullx'"}},
      {"abc@\n", {"E:JSON parse error, invalid keyword 'abc'", "E:JSON parse error, stray '@'"}},
      {"True\n", {"E:JSON parse error, stray 'T'"}},
      {"@", {"E:JSON parse error, stray '@'"}},
      {"\x01\x01", {"E:JSON parse error, stray '\x01'", "E:JSON parse error, stray '\x01'"}},
      {"@@@\x01{}", {"E:JSON parse error, stray '@'", "E:JSON parse error, stray '\x01'", "V:{}"}},
      {" \x00 "s, {"E:JSON parse error, stray ''"}},
      {"\xff", {"E:JSON parse error, stray '\xff'"}},
      {"\xc3\xa9{}", {"E:JSON parse error, stray '\xc3'", "V:{}"}},
      {"1\xff", {"V:1", "E:JSON parse error, stray '\xff'"}},
      {"true\xc3\xa9\n", {"V:true", "E:JSON parse error, stray '\xc3'"}},
      {"01\n", {"E:JSON parse error, stray '01'"}},
      {"-01\n", {"E:JSON parse error, stray '-01'"}},
      {"-\n", {"E:JSON parse error, stray '-\n'"}},
      {"[-]", {"E:JSON parse error, stray '-]'"}},
      {"1.\n", {"E:JSON parse error, stray '1.\n'"}},
      {"1e\n", {"E:JSON parse error, stray '1e\n'"}},
      {"1e+\n", {"E:JSON parse error, stray '1e+\n'"}},
      {"1.5.\n", {"V:1.5", "E:JSON parse error, stray '.'"}},
      {"0e5\n", {"V:0", "E:JSON parse error, invalid keyword 'e'", "V:5"}},
      {"1E+5 -0\n", {"V:100000", "V:0"}},
      {"\"\t\"", {"E:JSON parse error, stray '\"\t'"}},
      {"\"abc\n\"\x01", {"E:JSON parse error, stray '\"abc\n'", "E:JSON parse error, stray '\x01'"}},
      {"\"\xfe\"\n", {"E:JSON parse error, stray '\"\xfe'"}},
      {"{\"a\":\"b\x01" "c\" , \"d\":1}",
       {"E:JSON parse error, stray '\"b\x01'", "E:JSON parse error, expecting value", R"(V:"d")",
        "E:JSON parse error, expecting value", "V:1", "E:JSON parse error, expecting value"}},
      {R"("\x")", {"E:JSON parse error, invalid escape sequence in string"}},
      {R"("\u12")", {"E:JSON parse error, \\u12\" is not a valid Unicode character"}},
      {R"("\ud800")", {"E:JSON parse error, \\ud800 is not a valid Unicode character"}},
      {R"("\udc00")", {"E:JSON parse error, \\udc00 is not a valid Unicode character"}},
      {R"("\ud83d\u0041")", {"E:JSON parse error, \\ud83d is not a valid Unicode character"}},
      {R"("\uFFFF")", {"E:JSON parse error, \\uFFFF is not a valid Unicode character"}},
      {"\"\xef\xbf\xbf\"", {"E:JSON parse error, invalid UTF-8 sequence in string"}},
      {"\"\xc3\"", {"E:JSON parse error, invalid UTF-8 sequence in string"}},
  };
  for (const auto& [input, expected] : table) expect_parse(input, expected);
}

Test(json_streamer, nesting_limit_skips_to_the_end_of_the_value) {
  std::string deepest = std::string(kMaxNesting, '[') + std::string(kMaxNesting, ']');
  cr_expect(parse(deepest).size() == 1 && parse(deepest)[0][0] == 'V');
  // QEMU would start over in the middle of the brackets; here the rest of
  // the value is skipped and the next value parses.
  std::string too_deep = std::string(kMaxNesting + 100, '[') + std::string(kMaxNesting + 100, ']');
  expect_parse(too_deep + "{}", {"E:JSON nesting depth limit exceeded", "V:{}"});
}

Test(json_streamer, oversize_value_is_refused_once_and_skipped) {
  // A 4 MiB string: refused when it crosses the limit, its end found by
  // following the string without keeping it, the next value parses.
  std::string big = R"({"execute":"x","id":")" + std::string(4 << 20, 'x') + "\"}" + R"({"execute":"y"})";
  auto got = parse(big, 4096);
  cr_assert(got == (std::vector<std::string>{"E:JSON token size limit exceeded", R"(V:{"execute": "y"})"}),
            "%s", join(got).substr(0, 200).c_str());
  // Brackets and strings inside the skipped part still count.
  std::string tricky = "[\"]]]\"," + std::string(100, '1') + ",[[]]]{}";
  cr_expect(parse(tricky, 1, 32) == (std::vector<std::string>{"E:JSON token size limit exceeded", "V:{}"}),
            "%s", join(parse(tricky, 1, 32)).c_str());
  // Exactly at the limit is fine.
  cr_expect(parse("[1234]", 0, 6) == std::vector<std::string>{"V:[1234]"});
  cr_expect(parse("[12345]", 0, 6) == std::vector<std::string>{"E:JSON token size limit exceeded"});
}

Test(json_streamer, resynchronizes_after_binary_garbage) {
  // Garbage can leave the lexer anywhere (inside a string, an escape, a
  // deep container); 0xFF, which QMP clients send to resync, ends it all.
  uint32_t seed = 12345;
  for (int round = 0; round < 200; ++round) {
    std::string garbage;
    for (int i = 0; i < 300; ++i) {
      seed = seed * 1103515245 + 12345;
      garbage += static_cast<char>(seed >> 24);
    }
    auto got = parse(garbage + "\xff{\"execute\":\"ok\"}", 7);
    cr_assert(!got.empty() && got.back() == R"(V:{"execute": "ok"})", "round %d: %s", round,
              got.empty() ? "" : got.back().c_str());
  }
}
