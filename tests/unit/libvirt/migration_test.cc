// The domain XML of a migration that moves no RAM: the source's relay adds
// <vmpod:ram>, the destination's hook takes it out and gives QEMU vmpod's
// monitor; a second move replaces the first's. A domain defined with its
// RAM on podfs gets vmpod's monitor; any other is left alone.
#include <criterion/criterion.h>

#include <string>

#include <vmpod/libvirt/domain.h>
#include <vmpod/libvirt/migration.h>

using namespace vmpod;
using namespace vmpod::libvirt;

namespace {

constexpr const char* kHandover =
    "size=268435456 stripe=1048576 regions=mem0:7:00112233445566778899aabbccddeeff,"
    "mem1:9:ffeeddccbbaa99887766554433221100";

const char* kDomain =
    "<domain type='qemu'><name>demo</name><uuid>8a385a63-8db3-40fd-b937-40dd2c13a674</uuid>"
    "<metadata><vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' pods='2'/></metadata>"
    "<devices/></domain>";

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

Test(migration, the_handover_goes_out_with_the_xml_and_comes_off_at_the_destination) {
  auto sent = with_ram_handover(kDomain, kHandover, true);
  cr_assert(sent.has_value(), "%s", sent ? "" : sent.error().to_string().c_str());
  cr_assert_eq(count(*sent, "https://vmpod.dev/xmlns/libvirt/1/migration"), 1u, "%s", sent->c_str());
  // The user's element stays as it was, and the domain still parses.
  auto domain = parse_domain(*sent);
  cr_assert(domain.has_value(), "%s", domain ? "" : domain.error().to_string().c_str());
  cr_assert(domain->placement.has_value());
  // A second Begin3 of the same XML replaces the element.
  auto again = with_ram_handover(*sent, kHandover, false);
  cr_assert(again.has_value());
  cr_assert_eq(count(*again, "https://vmpod.dev/xmlns/libvirt/1/migration"), 1u, "%s", again->c_str());

  auto incoming = incoming_domain(*sent, "/run/vmpod/libvirt-ram.migration/u/monitor.sock");
  cr_assert(incoming.has_value(), "%s", incoming ? "" : incoming.error().to_string().c_str());
  cr_assert(incoming->handover.has_value());
  cr_assert_str_eq(incoming->handover->c_str(), kHandover);
  cr_assert(incoming->running);
  cr_assert_eq(count(incoming->xml, "xmlns/libvirt/1/migration"), 0u, "the tokens stayed in: %s", incoming->xml.c_str());
  cr_assert_eq(count(incoming->xml, "path=/run/vmpod/libvirt-ram.migration/u/monitor.sock,server=on,wait=off"), 1u, "%s",
               incoming->xml.c_str());
  cr_assert_eq(count(incoming->xml, "chardev=vmpod-monitor,mode=control"), 1u);
  cr_assert(parse_domain(incoming->xml).has_value());
  cr_assert(!incoming_domain(*again, "/x").value().running);
}

Test(migration, a_second_move_replaces_the_first_monitor_and_keeps_the_users_arguments) {
  std::string with_args = std::string(kDomain).replace(
      std::string(kDomain).find("</domain>"), 9,
      "<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
      "<qemu:arg value='-msg'/><qemu:arg value='timestamp=on'/></qemu:commandline></domain>");
  auto first = incoming_domain(with_ram_handover(with_args, kHandover, true).value(), "/a/monitor.sock");
  cr_assert(first.has_value(), "%s", first ? "" : first.error().to_string().c_str());
  auto second = incoming_domain(with_ram_handover(first->xml, kHandover, true).value(), "/b/monitor.sock");
  cr_assert(second.has_value());
  cr_assert_eq(count(second->xml, "vmpod-monitor,mode=control"), 1u, "%s", second->xml.c_str());
  cr_assert_eq(count(second->xml, "/a/monitor.sock"), 0u);
  cr_assert_eq(count(second->xml, "/b/monitor.sock"), 1u);
  cr_assert_eq(count(second->xml, "timestamp=on"), 1u, "the user's own arguments went: %s", second->xml.c_str());
  cr_assert_eq(count(second->xml, "<qemu:commandline"), 1u);
}

Test(migration, xml_without_a_handover_is_left_alone_and_bad_ones_are_refused) {
  auto plain = incoming_domain(kDomain, "/m.sock");
  cr_assert(plain.has_value());
  cr_assert(!plain->handover.has_value());
  cr_assert_str_eq(plain->xml.c_str(), kDomain);
  auto bad = incoming_domain(with_ram_handover(kDomain, "size=x", true).value(), "/m.sock");
  cr_assert(!bad.has_value(), "a malformed handover was taken");
  auto comma = incoming_domain(with_ram_handover(kDomain, kHandover, true).value(), "/a,b/m.sock");
  cr_assert(!comma.has_value(), "a monitor path with a comma would split QEMU's option");
  cr_assert(!with_ram_handover("<domain", kHandover, true).has_value());
  cr_assert(!with_ram_handover("<network/>", kHandover, true).has_value());
}

Test(migration, a_domain_with_its_ram_on_podfs_gets_vmpods_monitor_once) {
  const std::string file_backed = std::string(kDomain).replace(
      std::string(kDomain).find("<devices/>"), 10,
      "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking><devices/>");
  auto defined = with_vmpod_monitor(file_backed, "/run/vmpod/libvirt-ram");
  cr_assert(defined.has_value(), "%s", defined ? "" : defined.error().to_string().c_str());
  cr_assert_eq(count(*defined, "path=/run/vmpod/libvirt-ram.migration/8a385a63-8db3-40fd-b937-40dd2c13a674/monitor.sock,"
                               "server=on,wait=off"),
               1u, "%s", defined->c_str());
  auto domain = parse_domain(*defined);
  cr_assert(domain.has_value(), "%s", domain ? "" : domain.error().to_string().c_str());
  cr_assert(domain->vmpod_monitor);
  cr_assert(domain->placement.has_value(), "the user's element stays");
  // Defined again (virsh edit): still one monitor.
  auto again = with_vmpod_monitor(*defined, "/run/vmpod/libvirt-ram");
  cr_assert(again.has_value());
  cr_assert_eq(count(*again, "chardev=vmpod-monitor,mode=control"), 1u, "%s", again->c_str());
  cr_assert_eq(count(*again, "<qemu:commandline"), 1u);

  // Without a <uuid> it gets one, and its monitor is named by it.
  std::string no_uuid = file_backed;
  no_uuid.erase(no_uuid.find("<uuid>"), std::string("<uuid>8a385a63-8db3-40fd-b937-40dd2c13a674</uuid>").size());
  auto given = with_vmpod_monitor(no_uuid, "/b");
  cr_assert(given.has_value());
  auto named = parse_domain(*given);
  cr_assert(named.has_value(), "%s", given->c_str());
  cr_assert_eq(named->uuid.size(), 36u, "%s", given->c_str());
  cr_assert_eq(count(*given, "path=/b.migration/" + named->uuid + "/monitor.sock,"), 1u, "%s", given->c_str());
  cr_assert(!with_vmpod_monitor(file_backed, "/a,b").has_value(), "a comma would split QEMU's option");
}

Test(migration, other_domains_and_xml_libvirt_refuses_pass_unchanged) {
  for (const char* xml : {kDomain, "<domain", "<network/>",
                          "<domain><name>x</name><uuid>not/a,uuid</uuid><memoryBacking><source type='file'/>"
                          "</memoryBacking></domain>",
                          "<domain><name>x</name><memoryBacking><source type='anonymous'/></memoryBacking></domain>"}) {
    auto same = with_vmpod_monitor(xml, "/run/vmpod/libvirt-ram");
    cr_assert(same.has_value(), "%s", xml);
    cr_assert(*same == xml, "%s became %s", xml, same->c_str());
  }
  auto plain = parse_domain(kDomain);
  cr_assert(plain.has_value());
  cr_assert(!plain->vmpod_monitor);
}
