// The domain XML as libvirt hands it to the hook: name, id, file-backed
// RAM, the vmpod element as podfs placement text, a DAC label; and every
// element vmpod cannot honour refused with what is wrong.
#include <criterion/criterion.h>

#include <string>

#include <vmpod/libvirt/domain.h>

using namespace vmpod;
using namespace vmpod::libvirt;

namespace {

std::string domain_with(const std::string& inside, const std::string& id = "7") {
  return "<domain type='qemu' id='" + id + "'><name>demo</name>" + inside + "</domain>";
}

std::string element(const std::string& attributes) {
  return "<metadata><vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' " + attributes +
         "/></metadata>";
}

const std::string kFileBacking = "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>";

}  // namespace

Test(domain, reads_name_id_backing_and_placement) {
  auto domain = parse_domain(domain_with(kFileBacking + element("pods='2' stripe='1M'")));
  cr_assert(domain.has_value(), "%s", domain ? "" : domain.error().to_string().c_str());
  cr_assert_str_eq(domain->name.c_str(), "demo");
  cr_assert_eq(domain->id, 7);
  cr_assert(domain->file_backed);
  cr_assert(domain->placement.has_value());
  cr_assert_str_eq(domain->placement->c_str(), "pods=2 stripe=1M");
  cr_assert(!domain->dac_label.has_value());
  std::string dir = domain_ram_dir(*domain);
  cr_assert_str_eq(dir.c_str(), "libvirt/qemu/7-demo");
}

Test(domain, a_domain_without_the_element_is_left_alone) {
  auto plain = parse_domain("<domain type='kvm'><name>plain</name><memory>1048576</memory>"
                            "<metadata><other:x xmlns:other='https://example.org/x' pods='2'/></metadata></domain>");
  cr_assert(plain.has_value(), "%s", plain ? "" : plain.error().to_string().c_str());
  cr_assert(!plain->placement.has_value());
  cr_assert(!plain->file_backed);
  cr_assert_eq(plain->id, -1);
  auto anonymous = parse_domain(domain_with("<memoryBacking><source type='anonymous'/></memoryBacking>"));
  cr_assert(anonymous.has_value());
  cr_assert(!anonymous->file_backed);
}

Test(domain, pod_ids_and_the_namespace_prefix_are_free) {
  auto domain = parse_domain("<domain id='1'><name>d</name>" + kFileBacking +
                             "<metadata><v:memory xmlns:v=\"https://vmpod.dev/xmlns/libvirt/1\" pods=\"mem0,mem3\"/>"
                             "</metadata><seclabel type='static' model='dac'><label>+107:+108</label></seclabel>"
                             "</domain>");
  cr_assert(domain.has_value(), "%s", domain ? "" : domain.error().to_string().c_str());
  cr_assert_str_eq(domain->placement->c_str(), "pods=mem0,mem3");
  cr_assert(domain->dac_label.has_value());
  cr_assert_str_eq(domain->dac_label->c_str(), "+107:+108");
}

Test(domain, the_ram_directory_keeps_twenty_characters_of_the_name) {
  Domain domain;
  domain.id = 12;
  domain.name = "a-very-long-domain-name-over-twenty";
  std::string dir = domain_ram_dir(domain);
  cr_assert_str_eq(dir.c_str(), "libvirt/qemu/12-a-very-long-domain-n");
  domain.name.clear();
  for (int i = 0; i < 22; ++i) domain.name += "\xc3\xa9";  // é, two bytes each
  dir = domain_ram_dir(domain);
  std::string twenty;
  for (int i = 0; i < 20; ++i) twenty += "\xc3\xa9";
  std::string expected = "libvirt/qemu/12-" + twenty;
  cr_assert_str_eq(dir.c_str(), expected.c_str());
}

Test(domain, refuses_what_vmpod_cannot_honour) {
  struct Case {
    std::string xml;
    const char* says;
  };
  const Case cases[] = {
      {"", "domain XML"},
      {"<domain><name>x</name", "domain XML"},
      {"<pool><name>x</name></pool>", "not a <domain>"},
      {"<domain id='1'></domain>", "without <name>"},
      {"<domain id='x1'><name>d</name></domain>", "not a domain id"},
      {"<domain id='-3'><name>d</name></domain>", "not a domain id"},
      {domain_with(element("pods='2' local-cache='1G'")), "local-cache"},
      {domain_with(element("pods='2' colour='red'")), "colour"},
      {domain_with(element("")), "neither pods nor stripe"},
      {domain_with(element("pods='0'")), "pods=0"},
      {domain_with(element("stripe='1000'")), "stripe=1000"},
      {domain_with(element("pods='a b'")), "no spaces"},
      {domain_with("<metadata><vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' pods='1'/>"
                   "<vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' pods='2'/></metadata>"),
       "two <vmpod:memory>"},
      {domain_with("<metadata><vmpod:disk xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1'/></metadata>"), "<disk>"},
  };
  for (const Case& c : cases) {
    auto domain = parse_domain(c.xml);
    cr_assert(!domain.has_value(), "accepted: %s", c.xml.c_str());
    cr_assert_eq(domain.error().code(), ErrorCode::kInvalidArgument);
    cr_assert(domain.error().to_string().find(c.says) != std::string::npos, "%s: said '%s', not '%s'", c.xml.c_str(),
              domain.error().to_string().c_str(), c.says);
  }
}

Test(domain, external_entities_are_never_loaded) {
  auto domain = parse_domain("<?xml version='1.0'?><!DOCTYPE domain [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>"
                             "<domain id='1'><name>n&e;</name></domain>");
  if (domain) cr_assert_eq(domain->name.find("root:"), std::string::npos, "read /etc/passwd: %s", domain->name.c_str());
}
