// SchemaIndex holds values to a SchemaInfo list with QEMU's input-visitor
// texts; merge_schema joins QEMU's list and ours.
#include <criterion/criterion.h>

#include <vmpod/qmp/qapi.h>

using namespace vmpod;
using namespace vmpod::qmp;
using nlohmann::json;

namespace {

// The shapes QEMU's introspection uses, by hand: a command whose arguments
// nest an object, an array and an enum.
const json kSchema = json::parse(R"([
  {"name": "str", "meta-type": "builtin", "json-type": "string"},
  {"name": "int", "meta-type": "builtin", "json-type": "int"},
  {"name": "uint64", "meta-type": "builtin", "json-type": "int"},
  {"name": "bool", "meta-type": "builtin", "json-type": "boolean"},
  {"name": "number", "meta-type": "builtin", "json-type": "number"},
  {"name": "any", "meta-type": "builtin", "json-type": "value"},
  {"name": "Color", "meta-type": "enum", "values": ["red", "green"], "members": [{"name": "red"}, {"name": "green"}]},
  {"name": "Point", "meta-type": "object", "members": [{"name": "x", "type": "int"}, {"name": "y", "type": "int"},
                                                        {"name": "label", "type": "str", "default": null}]},
  {"name": "[Point]", "meta-type": "array", "element-type": "Point"},
  {"name": "q_obj_draw-arg", "meta-type": "object", "members": [
     {"name": "color", "type": "Color"}, {"name": "points", "type": "[Point]"},
     {"name": "scale", "type": "number", "default": null}, {"name": "fill", "type": "bool", "default": null},
     {"name": "extra", "type": "any", "default": null}]},
  {"name": "q_empty", "meta-type": "object", "members": []},
  {"name": "q_obj_size-arg", "meta-type": "object", "members": [{"name": "bytes", "type": "uint64"},
                                                                {"name": "delta", "type": "int", "default": null}]},
  {"name": "size", "meta-type": "command", "arg-type": "q_obj_size-arg", "ret-type": "q_empty"},
  {"name": "draw", "meta-type": "command", "arg-type": "q_obj_draw-arg", "ret-type": "[Point]"},
  {"name": "ping", "meta-type": "command", "arg-type": "q_empty", "ret-type": "q_empty"},
  {"name": "DRAWN", "meta-type": "event", "arg-type": "Point"}
])");

std::string error_of(const SchemaIndex& index, const std::string& command, const json& arguments) {
  auto error = index.check_arguments(command, arguments);
  return error ? *error : "";
}

void expect_error(const SchemaIndex& index, const std::string& command, const char* arguments, const char* expected) {
  const std::string error = error_of(index, command, json::parse(arguments));
  cr_expect_str_eq(error.c_str(), expected, "%s %s", command.c_str(), arguments);
}

}  // namespace

Test(qapi, arguments_that_fit_pass) {
  SchemaIndex index(kSchema);
  cr_expect_eq(error_of(index, "draw", json::parse(R"({"color": "red", "points": [{"x": 1, "y": 2}]})")), "");
  cr_expect_eq(error_of(index, "draw", json::parse(R"({"color": "green", "points": [], "scale": 1.5, "fill": true,
                                                       "extra": {"anything": [1]}})")), "");
  cr_expect_eq(error_of(index, "draw", json::parse(R"({"color": "red", "points": [], "scale": 2})")), "",
               "an integer is a number");
  cr_expect_eq(error_of(index, "ping", json::object()), "");
  cr_expect_eq(error_of(index, "not-in-schema", json::parse(R"({"a": 1})")), "", "unknown commands are not ours");
}

Test(qapi, missing_wrong_and_unexpected_members_in_qemus_words) {
  SchemaIndex index(kSchema);
  expect_error(index, "draw", R"({"points": []})", "Parameter 'color' is missing");
  expect_error(index, "draw", R"({"color": 1, "points": []})", "Invalid parameter type for 'color', expected: string");
  expect_error(index, "draw", R"({"color": "blue", "points": []})", "Parameter 'color' does not accept value 'blue'");
  expect_error(index, "draw", R"({"color": "red", "points": {}})", "Invalid parameter type for 'points', expected: array");
  expect_error(index, "draw", R"({"color": "red", "points": [{"x": 1}]})", "Parameter 'points[0].y' is missing");
  expect_error(index, "draw", R"({"color": "red", "points": [{"x": 1, "y": 2}, {"x": 1, "y": "2"}]})", "Invalid parameter type for 'points[1].y', expected: integer");
  expect_error(index, "draw", R"({"color": "red", "points": [{"x": 1.5, "y": 2}]})", "Invalid parameter type for 'points[0].x', expected: integer");
  expect_error(index, "draw", R"({"color": "red", "points": [], "fill": "yes"})", "Invalid parameter type for 'fill', expected: boolean");
  expect_error(index, "draw", R"({"color": "red", "points": [], "scale": "2"})", "Invalid parameter type for 'scale', expected: number");
  expect_error(index, "ping", R"({"x": 1})", "Parameter 'x' is unexpected");
  expect_error(index, "draw", R"({"color": "red", "points": [{"x": 1, "y": 2, "z": 3}]})", "Parameter 'points[0].z' is unexpected");
}

Test(qapi, integers_must_fit_their_type) {
  SchemaIndex index(kSchema);
  cr_expect_eq(error_of(index, "size", json::parse(R"({"bytes": 18446744073709551615, "delta": -9223372036854775808})")),
               "");
  expect_error(index, "size", R"({"bytes": -1})", "Parameter 'bytes' expects uint64");
  expect_error(index, "size", R"({"bytes": 1, "delta": 9223372036854775808})", "Parameter 'delta' expects int64");
}

Test(qapi, declared_members_are_checked_before_unexpected_ones) {
  SchemaIndex index(kSchema);
  // QEMU visits the struct's members first and complains about leftovers
  // only in visit_check_struct().
  expect_error(index, "draw", R"({"zzz": 1, "points": []})", "Parameter 'color' is missing");
}

Test(qapi, replies_and_events_are_checked_against_their_types) {
  SchemaIndex index(kSchema);
  cr_expect_eq(index.return_type("draw").value_or(""), "[Point]");
  cr_expect_eq(index.event_type("DRAWN").value_or(""), "Point");
  cr_expect(!index.return_type("DRAWN").has_value());
  cr_expect(!index.event_type("draw").has_value());
  cr_expect(!index.check_value("[Point]", json::parse(R"([{"x": 1, "y": 2, "label": "a"}])"), "return").has_value());
  const std::string bad = index.check_value("Point", json::parse(R"({"x": 1})"), "data").value_or("");
  cr_expect_str_eq(bad.c_str(), "Parameter 'data.y' is missing");
  auto unknown = index.check_value("Nope", json::object(), "data");
  cr_expect(unknown.has_value());
}

Test(qapi, merged_schema_keeps_qemus_entries_and_adds_ours_once) {
  json qemu = json::parse(R"([{"name": "str", "meta-type": "builtin", "json-type": "string"},
                              {"name": "query-status", "meta-type": "command", "arg-type": "0", "ret-type": "1"}])");
  json ours = json::parse(R"([{"name": "str", "meta-type": "builtin", "json-type": "string"},
                              {"name": "x-mine", "meta-type": "command", "arg-type": "q_empty", "ret-type": "str"}])");
  json merged = merge_schema(qemu, ours);
  cr_assert_eq(merged.size(), 3u);
  cr_expect_eq(merged[0]["name"], "str");
  cr_expect_eq(merged[1]["name"], "query-status");
  cr_expect_eq(merged[2]["name"], "x-mine");
}

Test(qapi, answers_become_replies) {
  Result<json> value = json{{"a", 1}};
  cr_expect_eq(reply_of(value).value(), json({{"a", 1}}));
  Status done;
  cr_expect_eq(reply_of(done).value(), json::object());
  Result<int> failed = fail(ErrorCode::kNotFound, "no vm named 'x'");
  auto reply = reply_of(failed);
  cr_assert(!reply.has_value());
  cr_expect_eq(reply.error().error_class, ErrorClass::kGenericError);
  cr_expect_str_eq(reply.error().desc.c_str(), "no vm named 'x'");
}
