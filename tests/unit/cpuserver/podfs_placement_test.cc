// The placement text of a podfs directory: counts, pod ids, stripes, and
// every malformed form refused with a reason.
#include <criterion/criterion.h>

#include <vmpod/cpuserver/podfs_placement.h>

using namespace vmpod;
using namespace vmpod::cpuserver;

Test(podfs_placement, reads_a_count_ids_and_a_stripe) {
  auto count = parse_placement("pods=2 stripe=1M");
  cr_assert(count.has_value(), "%s", count ? "" : count.error().to_string().c_str());
  cr_assert_eq(count->pod_count, 2u);
  cr_assert(count->pod_ids.empty());
  cr_assert_eq(count->stripe_bytes, 1u << 20);

  auto ids = parse_placement("  stripe=65536\tpods=mem3,mem0\n");
  cr_assert(ids.has_value(), "%s", ids ? "" : ids.error().to_string().c_str());
  cr_assert_eq(ids->pod_count, 0u);
  cr_assert_eq(ids->pod_ids.size(), 2u);
  cr_assert_str_eq(ids->pod_ids[0].c_str(), "mem3");
  cr_assert_str_eq(ids->pod_ids[1].c_str(), "mem0");
  cr_assert_eq(ids->stripe_bytes, 65536u);

  auto stripe_only = parse_placement("stripe=8K");
  cr_assert(stripe_only.has_value());
  cr_assert_eq(stripe_only->pod_count, 0u);
  cr_assert(stripe_only->pod_ids.empty());
}

Test(podfs_placement, what_it_writes_it_reads_back) {
  std::string text = format_placement({"mem0", "mem2"}, 1u << 20);
  cr_assert_str_eq(text.c_str(), "pods=mem0,mem2 stripe=1048576");
  auto parsed = parse_placement(text);
  cr_assert(parsed.has_value());
  cr_assert_eq(parsed->pod_ids, (std::vector<std::string>{"mem0", "mem2"}));
  cr_assert_eq(parsed->stripe_bytes, 1u << 20);
}

Test(podfs_placement, refuses_malformed_text) {
  for (const char* bad : {"", "   ", "pods", "pods=", "pods=0", "pods=99999", "pods=a,,b", "pods=a,a",
                          "stripe=0", "stripe=1000", "stripe=lots", "pods=1 pods=2", "stripe=4K stripe=8K",
                          "cache=1G", "pods=1,stripe=4K"}) {
    auto parsed = parse_placement(bad);
    cr_assert(!parsed.has_value(), "accepted '%s'", bad);
    cr_assert_eq(parsed.error().code(), ErrorCode::kInvalidArgument, "'%s': %s", bad,
                 parsed.error().to_string().c_str());
  }
}

Test(podfs_placement, splits_pod_ids) {
  cr_assert_eq(split_pod_ids("mem0,mem1"), (std::vector<std::string>{"mem0", "mem1"}));
  cr_assert_eq(split_pod_ids("mem0"), (std::vector<std::string>{"mem0"}));
  cr_assert(split_pod_ids("").empty());
}

Test(podfs_placement, a_handover_round_trips) {
  FileHandover file{256ull << 20, 1u << 20, {"mem0", "mem-1.b"}, {}};
  pods::RegionHandle a{7, {}}, b{1234567890123ull, {}};
  for (size_t i = 0; i < a.token.size(); ++i) {
    a.token[i] = static_cast<uint8_t>(i * 17);
    b.token[i] = static_cast<uint8_t>(255 - i);
  }
  file.regions = {a, b};
  const std::string text = format_handover(file);
  cr_assert_str_eq(text.c_str(),
                   "size=268435456 stripe=1048576 regions=mem0:7:00112233445566778899aabbccddeeff,"
                   "mem-1.b:1234567890123:fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0");
  auto parsed = parse_handover(text);
  cr_assert(parsed.has_value(), "%s", parsed ? "" : parsed.error().to_string().c_str());
  cr_assert_eq(parsed->size, file.size);
  cr_assert_eq(parsed->stripe_bytes, file.stripe_bytes);
  cr_assert(parsed->pod_ids == file.pod_ids);
  cr_assert_eq(parsed->regions.size(), 2u);
  cr_assert_eq(parsed->regions[1].id, b.id);
  cr_assert(parsed->regions[0].token == a.token && parsed->regions[1].token == b.token);

  auto adoption = parse_adoption("pc.ram " + text);
  cr_assert(adoption.has_value());
  cr_assert_str_eq(adoption->first.c_str(), "pc.ram");
  cr_assert_eq(adoption->second.regions.size(), 2u);
}

Test(podfs_placement, a_malformed_handover_says_what_is_wrong) {
  const std::string token(32, 'a');
  const struct {
    const char* text;
    const char* reason;
  } cases[] = {
      {"", "all needed"},
      {"size=4096 stripe=4K", "all needed"},
      {"size=x stripe=4K regions=mem0:1:", "not a byte count"},
      {"size=4096 stripe=1000 regions=mem0:1:", "multiple of 4 KiB"},
      {"size=4096 stripe=4K regions=mem0", "not POD:ID:TOKEN"},
      {"size=4096 stripe=4K regions=mem0:x:", "not ID:TOKEN"},
      {"size=4096 stripe=4K regions=mem0:1:abc", "32 hex digits"},
      {"size=4096 stripe=4K regions=mem0:1:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "not hex"},
      {"size=4096 stripe=4K regions=m/0:1:", "not a pod id"},
      {"size=1 size=2 stripe=4K regions=", "given twice"},
      {"size=4096 stripe=4K owner=me regions=", "unknown"},
  };
  for (const auto& c : cases) {
    auto parsed = parse_handover(c.text);
    cr_assert(!parsed.has_value(), "'%s' was taken", c.text);
    cr_assert(parsed.error().message().find(c.reason) != std::string::npos, "'%s': %s", c.text,
              parsed.error().message().c_str());
  }
  auto twice = parse_handover("size=4096 stripe=4K regions=mem0:1:" + token + ",mem0:2:" + token);
  cr_assert(!twice.has_value() && twice.error().message().find("named twice") != std::string::npos);
  for (const char* name : {"..", "a/b", "", "size=4096"}) {
    auto adoption = parse_adoption(std::string(name) + " size=4096 stripe=4K regions=mem0:1:" + token);
    cr_assert(!adoption.has_value(), "name '%s' was taken", name);
  }
}
