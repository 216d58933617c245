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
