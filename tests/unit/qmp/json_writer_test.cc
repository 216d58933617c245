// qmp_json_text(): QEMU's separators, escapes, number formats and QDict
// member order; every expected text was read from a live QEMU 7.2.
#include <criterion/criterion.h>

#include <cmath>
#include <limits>
#include <string>

#include <vmpod/qmp/qmp_protocol.h>

using namespace vmpod::qmp;
using nlohmann::json;

namespace {

void expect_text(const json& value, const std::string& expected) {
  std::string got = qmp_json_text(value);
  cr_expect(got == expected, "\n got      %s\n expected %s", got.c_str(), expected.c_str());
}

}  // namespace

Test(json_writer, member_order_is_qemus) {
  expect_text({{"QMP",
                {{"version", {{"qemu", {{"major", 7}, {"minor", 2}, {"micro", 22}}}, {"package", "p"}}},
                 {"capabilities", {"oob"}}}}},
              R"({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "p"}, )"
              R"("capabilities": ["oob"]}})");
  expect_text({{"id", 5}, {"error", {{"class", "CommandNotFound"}, {"desc", "d"}}}},
              R"({"id": 5, "error": {"class": "CommandNotFound", "desc": "d"}})");
  expect_text({{"return", json::object()}, {"id", "x"}}, R"({"return": {}, "id": "x"})");
  expect_text({{"event", "RESET"},
               {"timestamp", {{"seconds", 1}, {"microseconds", 2}}},
               {"data", {{"guest", false}, {"reason", "host-qmp-system-reset"}}}},
              R"({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", )"
              R"("data": {"guest": false, "reason": "host-qmp-system-reset"}})");
  expect_text(json::parse(R"([1,{"z":1,"a":2,"id":3}, [], {}, null, true])"),
              R"([1, {"a": 2, "z": 1, "id": 3}, [], {}, null, true])");
}

Test(json_writer, strings_escape_as_qemu) {
  expect_text("\u00e9/\x7f\U0001F600", R"("\u00E9/\u007F\uD83D\uDE00")");
  expect_text("\"\\\b\f\n\r\t\x01", R"("\"\\\b\f\n\r\t\u0001")");
  expect_text(std::string("a\0b", 3), R"("a\u0000b")");
  expect_text("\xc0\x80", R"("\u0000")");
  // Invalid UTF-8 becomes U+FFFD, one per bad sequence.
  expect_text("\xff|\xc3|\xe2\x82|\x80", R"("\uFFFD|\uFFFD|\uFFFD|\uFFFD")");
}

Test(json_writer, numbers_format_as_qemu) {
  expect_text(0.1, "0.10000000000000001");
  expect_text(1e300, "1.0000000000000001e+300");
  expect_text(-0.0, "-0");
  expect_text(1.5, "1.5");
  expect_text(uint64_t{12345678901234567890u}, "12345678901234567890");
  expect_text(int64_t{-5}, "-5");
  // QEMU writes "inf", which is not JSON.
  expect_text(std::numeric_limits<double>::infinity(), "null");
}

Test(json_writer, output_parses_back_to_the_same_value) {
  json value = json::parse(R"({"a": [1, -2, 3.25, "x\u0001y\u00e9", {"": null}], "b": {"c": true}})");
  JsonStreamer streamer;
  std::vector<JsonInput> inputs;
  streamer.feed(qmp_json_text(value), inputs);
  cr_assert_eq(inputs.size(), 1u);
  cr_expect(std::get<json>(inputs[0]) == value);
}
