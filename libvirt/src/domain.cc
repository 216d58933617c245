#include <vmpod/libvirt/domain.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <cstring>
#include <memory>

#include <fmt/format.h>

#include <vmpod/cpuserver/podfs_placement.h>

namespace vmpod::libvirt {

namespace {

struct DocFree {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};

bool named(const xmlNode* node, const char* name) {
  return node->type == XML_ELEMENT_NODE && std::strcmp(reinterpret_cast<const char*>(node->name), name) == 0;
}

const xmlNode* child(const xmlNode* parent, const char* name) {
  for (const xmlNode* node = parent->children; node != nullptr; node = node->next) {
    if (named(node, name)) return node;
  }
  return nullptr;
}

std::optional<std::string> attribute(const xmlNode* node, const char* name) {
  xmlChar* value = xmlGetNoNsProp(node, reinterpret_cast<const xmlChar*>(name));
  if (value == nullptr) return std::nullopt;
  std::string text(reinterpret_cast<const char*>(value));
  xmlFree(value);
  return text;
}

std::string text_of(const xmlNode* node) {
  xmlChar* content = xmlNodeGetContent(node);
  if (content == nullptr) return {};
  std::string text(reinterpret_cast<const char*>(content));
  xmlFree(content);
  return text;
}

// The vmpod element, as placement text podfs takes.
Result<std::string> placement_of(const xmlNode* element) {
  for (const xmlAttr* attr = element->properties; attr != nullptr; attr = attr->next) {
    std::string_view name(reinterpret_cast<const char*>(attr->name));
    if (name != "pods" && name != "stripe") {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("<vmpod:memory {}=...>: vmpod knows pods= and stripe={}", name,
                              name == "local-cache"
                                  ? "; the RAM cached on the host is bounded for all domains by "
                                    "`vmpod libvirt backing --local-cache`"
                                  : ""));
    }
  }
  std::string text;
  for (const char* name : {"pods", "stripe"}) {
    auto value = attribute(element, name);
    if (!value) continue;
    if (value->find_first_of(" \t\n") != std::string::npos) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("<vmpod:memory {}='{}'>: no spaces", name, *value));
    }
    text += fmt::format("{}{}={}", text.empty() ? "" : " ", name, *value);
  }
  if (text.empty()) return fail(ErrorCode::kInvalidArgument, "<vmpod:memory/> names neither pods nor stripe");
  auto parsed = cpuserver::parse_placement(text);
  if (!parsed) return fail(parsed.error().context("<vmpod:memory>"));
  return text;
}

}  // namespace

Result<Domain> parse_domain(std::string_view xml) {
  if (xml.size() > 16u << 20) return fail(ErrorCode::kInvalidArgument, "domain XML over 16 MiB");
  // No network, no external DTD, no entity expansion: libvirt's XML needs none.
  std::unique_ptr<xmlDoc, DocFree> doc(xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                                                     XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) {
    const xmlError* error = xmlGetLastError();
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("domain XML: {}", error && error->message ? std::string(error->message) : "malformed"));
  }
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (root == nullptr || !named(root, "domain")) return fail(ErrorCode::kInvalidArgument, "not a <domain>");
  Domain domain;
  const xmlNode* name = child(root, "name");
  if (name == nullptr) return fail(ErrorCode::kInvalidArgument, "<domain> without <name>");
  domain.name = text_of(name);
  if (domain.name.empty()) return fail(ErrorCode::kInvalidArgument, "<domain> with an empty <name>");
  if (const xmlNode* uuid = child(root, "uuid")) domain.uuid = text_of(uuid);
  bool uuid_shaped = domain.uuid.size() <= 36 && domain.uuid.find_first_not_of("0123456789abcdefABCDEF-") == std::string::npos;
  if (!uuid_shaped) return fail(ErrorCode::kInvalidArgument, "<uuid>" + domain.uuid + "</uuid> is not a UUID");
  if (auto id = attribute(root, "id")) {
    try {
      size_t used = 0;
      domain.id = std::stoi(*id, &used);
      if (used != id->size() || domain.id < 0) throw std::invalid_argument(*id);
    } catch (const std::exception&) {
      return fail(ErrorCode::kInvalidArgument, "<domain id='" + *id + "'> is not a domain id");
    }
  }
  if (const xmlNode* backing = child(root, "memoryBacking")) {
    const xmlNode* source = child(backing, "source");
    domain.file_backed = source != nullptr && attribute(source, "type") == "file";
  }
  const std::string monitor_chardev = fmt::format("socket,id={},", kVmpodMonitorId);
  for (const xmlNode* node = root->children; node != nullptr; node = node->next) {
    if (!named(node, "commandline") || node->ns == nullptr || node->ns->href == nullptr ||
        std::string_view(reinterpret_cast<const char*>(node->ns->href)) != kQemuNamespace) {
      continue;
    }
    for (const xmlNode* arg = node->children; arg != nullptr; arg = arg->next) {
      if (named(arg, "arg") && attribute(arg, "value").value_or("").starts_with(monitor_chardev)) domain.vmpod_monitor = true;
    }
  }
  for (const xmlNode* node = root->children; node != nullptr; node = node->next) {
    if (!named(node, "seclabel") || attribute(node, "model") != "dac") continue;
    if (const xmlNode* label = child(node, "label")) domain.dac_label = text_of(label);
  }
  const xmlNode* metadata = child(root, "metadata");
  for (const xmlNode* node = metadata ? metadata->children : nullptr; node != nullptr; node = node->next) {
    if (node->type != XML_ELEMENT_NODE || node->ns == nullptr || node->ns->href == nullptr) continue;
    if (std::string_view(reinterpret_cast<const char*>(node->ns->href)) != kMetadataNamespace) continue;
    if (!named(node, "memory")) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("<{}> in vmpod's namespace: vmpod knows <memory>", reinterpret_cast<const char*>(node->name)));
    }
    if (domain.placement) return fail(ErrorCode::kInvalidArgument, "two <vmpod:memory> elements");
    auto placement = placement_of(node);
    if (!placement) return fail(placement.error());
    domain.placement = *placement;
  }
  return domain;
}

std::string domain_ram_dir(const Domain& domain) {
  // libvirt keeps the first 20 characters (not bytes) of the name.
  constexpr size_t kShortNameMax = 20;
  size_t end = 0;
  for (size_t characters = 0; end < domain.name.size() && characters < kShortNameMax; ++characters) {
    ++end;
    while (end < domain.name.size() && (static_cast<unsigned char>(domain.name[end]) & 0xC0) == 0x80) ++end;
  }
  return fmt::format("libvirt/qemu/{}-{}", domain.id, domain.name.substr(0, end));
}

}  // namespace vmpod::libvirt
