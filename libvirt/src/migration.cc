#include <vmpod/libvirt/migration.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <vmpod/cpuserver/guest_identity.h>
#include <vmpod/cpuserver/podfs.h>
#include <vmpod/cpuserver/podfs_placement.h>
#include <vmpod/libvirt/domain.h>
#include <vmpod/net/socket.h>
#include <vmpod/qmp/qmp_client.h>

namespace vmpod::libvirt {

namespace {

// vmpod's monitor on QEMU's command line: -chardev socket,id=ID,... -mon chardev=ID,mode=control

struct DocFree {
  void operator()(xmlDoc* doc) const { xmlFreeDoc(doc); }
};
using Doc = std::unique_ptr<xmlDoc, DocFree>;

const xmlChar* xml_text(std::string_view text) { return reinterpret_cast<const xmlChar*>(text.data()); }

Result<Doc> read_domain(std::string_view xml) {
  if (xml.size() > 16u << 20) return fail(ErrorCode::kInvalidArgument, "domain XML over 16 MiB");
  Doc doc(xmlReadMemory(xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING));
  if (!doc) return fail(ErrorCode::kInvalidArgument, "domain XML: malformed");
  const xmlNode* root = xmlDocGetRootElement(doc.get());
  if (root == nullptr || std::strcmp(reinterpret_cast<const char*>(root->name), "domain") != 0) {
    return fail(ErrorCode::kInvalidArgument, "not a <domain>");
  }
  return doc;
}

std::string write_domain(xmlDoc* doc) {
  xmlBuffer* buffer = xmlBufferCreate();
  xmlNodeDump(buffer, doc, xmlDocGetRootElement(doc), 0, 0);
  std::string text(reinterpret_cast<const char*>(xmlBufferContent(buffer)), static_cast<size_t>(xmlBufferLength(buffer)));
  xmlBufferFree(buffer);
  return text + "\n";
}

bool in_namespace(const xmlNode* node, std::string_view href, const char* name) {
  return node->type == XML_ELEMENT_NODE && node->ns != nullptr && node->ns->href != nullptr &&
         std::string_view(reinterpret_cast<const char*>(node->ns->href)) == href &&
         std::strcmp(reinterpret_cast<const char*>(node->name), name) == 0;
}

xmlNode* child_named(xmlNode* parent, const char* name) {
  for (xmlNode* node = parent->children; node != nullptr; node = node->next) {
    if (node->type == XML_ELEMENT_NODE && node->ns == nullptr && std::strcmp(reinterpret_cast<const char*>(node->name), name) == 0) {
      return node;
    }
  }
  return nullptr;
}

// Unlinks and frees the children of `parent` for which `drop` holds.
template <class Drop>
void remove_children(xmlNode* parent, Drop drop) {
  for (xmlNode* node = parent->children; node != nullptr;) {
    xmlNode* next = node->next;
    if (drop(node)) {
      xmlUnlinkNode(node);
      xmlFreeNode(node);
    }
    node = next;
  }
}

// An element in namespace `href` below `parent`, declaring it itself.
xmlNode* add_namespaced(xmlNode* parent, std::string_view href, const char* prefix, const char* name) {
  xmlNode* node = xmlNewChild(parent, nullptr, xml_text(name), nullptr);
  xmlSetNs(node, xmlNewNs(node, xml_text(href), xml_text(prefix)));
  return node;
}

std::string arg_value(const xmlNode* arg) {
  xmlChar* value = xmlGetNoNsProp(arg, xml_text("value"));
  if (value == nullptr) return {};
  std::string text(reinterpret_cast<const char*>(value));
  xmlFree(value);
  return text;
}

// The arguments vmpod put on the command line: each option and its value.
bool vmpod_monitor_arg(const std::string& value) {
  return value.starts_with(fmt::format("socket,id={},", kVmpodMonitorId)) ||
         value == fmt::format("chardev={},mode=control", kVmpodMonitorId);
}

void set_monitor(xmlNode* root, const std::string& monitor_socket) {
  xmlNode* commandline = nullptr;
  for (xmlNode* node = root->children; node != nullptr; node = node->next) {
    if (in_namespace(node, kQemuNamespace, "commandline")) commandline = node;
  }
  if (commandline == nullptr) commandline = add_namespaced(root, kQemuNamespace, "qemu", "commandline");
  // A monitor of an earlier move goes, with the option before its value.
  for (xmlNode* node = commandline->children; node != nullptr;) {
    xmlNode* next = node->next;
    while (next != nullptr && next->type != XML_ELEMENT_NODE) next = next->next;
    if (in_namespace(node, kQemuNamespace, "arg") && next != nullptr && vmpod_monitor_arg(arg_value(next))) {
      xmlNode* after = next->next;
      for (xmlNode* gone : {node, next}) {
        xmlUnlinkNode(gone);
        xmlFreeNode(gone);
      }
      node = after;
      continue;
    }
    node = next;
  }
  for (const std::string& value : {std::string("-chardev"),
                                   fmt::format("socket,id={},path={},server=on,wait=off", kVmpodMonitorId, monitor_socket),
                                   std::string("-mon"), fmt::format("chardev={},mode=control", kVmpodMonitorId)}) {
    xmlNode* arg = xmlNewChild(commandline, commandline->ns, xml_text("arg"), nullptr);
    xmlNewProp(arg, xml_text("value"), xml_text(value));
  }
}

tl::unexpected<Error> xattr_error(const std::string& what, const std::string& file) {
  return fail_errno(fmt::format("{} of {}", what, file), errno);
}

}  // namespace

Result<std::string> with_ram_handover(std::string_view domain_xml, std::string_view handover, bool running) {
  auto doc = read_domain(domain_xml);
  if (!doc) return fail(doc.error());
  xmlNode* root = xmlDocGetRootElement(doc->get());
  xmlNode* metadata = child_named(root, "metadata");
  if (metadata == nullptr) metadata = xmlNewChild(root, nullptr, xml_text("metadata"), nullptr);
  remove_children(metadata, [](const xmlNode* node) { return in_namespace(node, kMigrationNamespace, "ram"); });
  xmlNode* ram = add_namespaced(metadata, kMigrationNamespace, "vmpod", "ram");
  xmlNewProp(ram, xml_text("regions"), xml_text(std::string(handover)));
  xmlNewProp(ram, xml_text("running"), xml_text(running ? "yes" : "no"));
  return write_domain(doc->get());
}

Result<IncomingDomain> incoming_domain(std::string_view domain_xml, const std::string& monitor_socket) {
  if (monitor_socket.find(',') != std::string::npos) {
    return fail(ErrorCode::kInvalidArgument, "a monitor socket path with a comma: " + monitor_socket);
  }
  auto doc = read_domain(domain_xml);
  if (!doc) return fail(doc.error());
  xmlNode* root = xmlDocGetRootElement(doc->get());
  IncomingDomain incoming;
  if (xmlNode* metadata = child_named(root, "metadata")) {
    remove_children(metadata, [&](const xmlNode* node) {
      if (!in_namespace(node, kMigrationNamespace, "ram")) return false;
      if (incoming.handover) return true;
      xmlChar* regions = xmlGetNoNsProp(node, xml_text("regions"));
      incoming.handover = regions ? std::string(reinterpret_cast<const char*>(regions)) : std::string();
      xmlFree(regions);
      xmlChar* running = xmlGetNoNsProp(node, xml_text("running"));
      incoming.running = running != nullptr && std::string_view(reinterpret_cast<const char*>(running)) == "yes";
      xmlFree(running);
      return true;
    });
  }
  if (!incoming.handover) {
    incoming.xml = std::string(domain_xml);
    return incoming;
  }
  auto parsed = cpuserver::parse_handover(*incoming.handover);
  if (!parsed) return fail(parsed.error().context("<vmpod:ram>"));
  set_monitor(root, monitor_socket);
  incoming.xml = write_domain(doc->get());
  return incoming;
}

Result<std::string> with_vmpod_monitor(std::string_view domain_xml, const std::string& memory_backing_dir) {
  auto doc = read_domain(domain_xml);
  if (!doc) return std::string(domain_xml);
  xmlNode* root = xmlDocGetRootElement(doc->get());
  xmlNode* backing = child_named(root, "memoryBacking");
  xmlNode* source = backing ? child_named(backing, "source") : nullptr;
  xmlChar* type = source ? xmlGetNoNsProp(source, xml_text("type")) : nullptr;
  const bool file_backed = type != nullptr && std::string_view(reinterpret_cast<const char*>(type)) == "file";
  xmlFree(type);
  if (!file_backed) return std::string(domain_xml);
  xmlNode* uuid_node = child_named(root, "uuid");
  if (uuid_node == nullptr) {
    uuid_node = xmlNewChild(root, nullptr, xml_text("uuid"), xml_text(cpuserver::new_generation_id()));
  }
  xmlChar* uuid_text = xmlNodeGetContent(uuid_node);
  std::string uuid = uuid_text ? reinterpret_cast<const char*>(uuid_text) : "";
  xmlFree(uuid_text);
  uuid.erase(std::remove_if(uuid.begin(), uuid.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); }),
             uuid.end());
  // libvirt refuses a UUID that is not one, with its own reason.
  if (uuid.empty() || uuid.find_first_not_of("0123456789abcdefABCDEF-") != std::string::npos) {
    return std::string(domain_xml);
  }
  // The socket's path is in QEMU's -chardev option list.
  const std::string socket = monitor_socket(memory_backing_dir, uuid);
  if (socket.find(',') != std::string::npos) {
    return fail(ErrorCode::kWrongState, "the memory backing directory has a comma, which QEMU's -chardev cannot take: " +
                                            memory_backing_dir);
  }
  set_monitor(root, socket);
  return write_domain(doc->get());
}

std::string migration_dir(const std::string& memory_backing_dir) { return memory_backing_dir + ".migration"; }

std::string handover_path(const std::string& memory_backing_dir, const std::string& uuid) {
  return migration_dir(memory_backing_dir) + "/" + uuid + ".regions";
}

std::string monitor_dir(const std::string& memory_backing_dir, const std::string& uuid) {
  return migration_dir(memory_backing_dir) + "/" + uuid;
}

std::string monitor_socket(const std::string& memory_backing_dir, const std::string& uuid) {
  return monitor_dir(memory_backing_dir, uuid) + "/monitor.sock";
}

std::string resume_path(const std::string& memory_backing_dir, const std::string& uuid) {
  return migration_dir(memory_backing_dir) + "/" + uuid + ".resume";
}

Result<std::string> ram_regions(const std::string& ram_file) {
  char value[4096];
  ssize_t n = ::getxattr(ram_file.c_str(), std::string(cpuserver::kRegionsXattr).c_str(), value, sizeof(value));
  if (n < 0) return xattr_error("the regions", ram_file);
  return std::string(value, static_cast<size_t>(n));
}

Status set_ram_owned(const std::string& ram_file, bool owned) {
  std::string_view value = owned ? "yes" : "no";
  if (::setxattr(ram_file.c_str(), std::string(cpuserver::kOwnedXattr).c_str(), value.data(), value.size(), 0) != 0) {
    return xattr_error(owned ? "owning the regions" : "letting go of the regions", ram_file);
  }
  return {};
}

bool ram_owned(const std::string& ram_file) {
  char value[8];
  ssize_t n = ::getxattr(ram_file.c_str(), std::string(cpuserver::kOwnedXattr).c_str(), value, sizeof(value));
  return n != 2 || std::string_view(value, 2) != "no";
}

std::optional<std::string> MigrationHost::ram_file(const std::string& name, int id) const {
  Domain domain;
  domain.name = name;
  domain.id = id;
  std::string file = backing_ + "/" + domain_ram_dir(domain) + "/" + std::string(kRamFile);
  char value[8];
  if (::getxattr(file.c_str(), std::string(cpuserver::kOwnedXattr).c_str(), value, sizeof(value)) < 0) return std::nullopt;
  return file;
}

template <class Call>
Status MigrationHost::on_domain(const std::string& uuid, std::string_view what, Call call) const {
  // libvirt's own connection object, as root, to the libvirtd the relay serves.
  const std::string uri = "qemu+unix:///system?socket=" + libvirtd_socket_;
  auto libvirt_error = [&](std::string_view doing) {
    const virError* error = virGetLastError();
    return fail(ErrorCode::kUnavailable, fmt::format("{} domain {}: {}", doing, uuid,
                                                     error && error->message ? error->message : "libvirt failed"));
  };
  std::unique_ptr<virConnect, int (*)(virConnectPtr)> connection(virConnectOpen(uri.c_str()), virConnectClose);
  if (!connection) return libvirt_error("connecting to " + uri + " for");
  std::unique_ptr<virDomain, int (*)(virDomainPtr)> domain(virDomainLookupByUUIDString(connection.get(), uuid.c_str()),
                                                           virDomainFree);
  if (!domain || !call(domain.get())) return libvirt_error(what);
  return {};
}

Status MigrationHost::ignore_shared(const std::string& uuid) const {
  // vmpod's own monitor if the domain has one (with_vmpod_monitor): libvirt
  // marks a domain whose monitor a client used as tainted.
  const std::string socket = monitor_socket(backing_, uuid);
  if (::access(socket.c_str(), F_OK) == 0) return ignore_shared_at(socket);
  std::string answer;
  Status sent = on_domain(uuid, "x-ignore-shared on", [&](virDomainPtr domain) {
    char* reply = nullptr;
    const char* command = R"({"execute":"migrate-set-capabilities","arguments":{"capabilities":)"
                          R"([{"capability":"x-ignore-shared","state":true}]}})";
    if (virDomainQemuMonitorCommand(domain, command, &reply, 0) != 0) return false;
    answer = reply ? reply : "";
    std::free(reply);
    return true;
  });
  if (!sent) return sent;
  if (answer.find("\"return\"") == std::string::npos) {
    return fail(ErrorCode::kInternal, "x-ignore-shared on domain " + uuid + ": " + answer);
  }
  return {};
}

Result<bool> MigrationHost::running(const std::string& uuid) const {
  int state = VIR_DOMAIN_NOSTATE;
  Status asked = on_domain(uuid, "the state of", [&](virDomainPtr domain) {
    return virDomainGetState(domain, &state, nullptr, 0) == 0;
  });
  if (!asked) return fail(asked.error());
  return state == VIR_DOMAIN_RUNNING;
}

Status MigrationHost::suspend(const std::string& uuid) const {
  return on_domain(uuid, "pausing", [](virDomainPtr domain) { return virDomainSuspend(domain) == 0; });
}

Status MigrationHost::resume(const std::string& uuid) const {
  return on_domain(uuid, "resuming", [](virDomainPtr domain) {
    int state = VIR_DOMAIN_NOSTATE;
    if (virDomainGetState(domain, &state, nullptr, 0) != 0) return false;
    return state != VIR_DOMAIN_PAUSED || virDomainResume(domain) == 0;
  });
}

Status ignore_shared_at(const std::string& qmp_socket) {
  auto client = qmp::QmpClient::connect(net::SocketAddress{net::SocketAddress::Kind::kUnix, qmp_socket, {}, 0},
                                        std::chrono::seconds(5));
  if (!client) return fail(client.error().context("vmpod's monitor at " + qmp_socket));
  auto set = (*client)->execute("migrate-set-capabilities",
                                {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", true}}}}});
  if (!set) return fail(set.error().context("x-ignore-shared"));
  return {};
}

Result<rpc::UriRewriter::FromClient> MigrationRelay::from_client(std::string packet) {
  auto header = rpc::parse_header(packet);
  if (!header) return fail(header.error());
  auto defined = rpc::edit_domain_xml_call(*header, packet, [&](std::string_view xml) {
    return with_vmpod_monitor(xml, host_.memory_backing_dir());
  });
  if (!defined && defined.error().code() == ErrorCode::kInvalidArgument) return fail(defined.error());
  if (!defined) {
    return rpc::UriRewriter::FromClient{
        rpc::error_reply(*header, rpc::kErrorOperationFailed, rpc::kFromRemote, "vmpod: " + defined.error().message()),
        true};
  }
  if (*defined) return rpc::UriRewriter::FromClient{std::move(**defined)};
  auto call = rpc::migration_call(*header, packet);
  if (!call) return fail(call.error());
  if (!*call) return rpc::UriRewriter::FromClient{std::move(packet)};
  const rpc::DomainRef& domain = (*call)->domain;
  auto ram = host_.ram_file(domain.name, domain.id);
  if (!ram) return rpc::UriRewriter::FromClient{std::move(packet)};
  auto refuse = [&](const std::string& reason) {
    spdlog::warn("libvirt relay: migration of {}: {}", domain.name, reason);
    return rpc::UriRewriter::FromClient{
        rpc::error_reply(*header, rpc::kErrorOperationFailed, rpc::kFromRemote,
                         fmt::format("vmpod: domain {} (RAM in memory pods): {}", domain.name, reason)),
        true};
  };
  Step step{**call, *ram, false};
  switch (step.call.procedure) {
    case rpc::kProcMigrateBegin3: {
      if (Status shared = host_.ignore_shared(domain.uuid); !shared) return refuse(shared.error().message());
      // Most dirty pages go back now, while the guest runs; the rest once it is paused.
      if (Status written = cpuserver::write_back(*ram); !written) return refuse(written.error().message());
      break;
    }
    case rpc::kProcMigratePerform3: {
      if (step.call.flags & rpc::kMigratePeerToPeer) {
        return refuse("vmpod moves its RAM only in a migration the client drives: leave out --p2p and --tunnelled");
      }
      auto running = host_.running(domain.uuid);
      if (!running) return refuse(running.error().message());
      if (*running) {
        if (Status paused = host_.suspend(domain.uuid); !paused) return refuse(paused.error().message());
        step.paused_here = true;
        std::lock_guard lock(mutex_);
        paused_.insert(domain.uuid);
      }
      if (Status written = cpuserver::write_back(*ram); !written) {
        if (step.paused_here) {
          (void)host_.resume(domain.uuid);
          std::lock_guard lock(mutex_);
          paused_.erase(domain.uuid);
        }
        return refuse(written.error().message());
      }
      break;
    }
    default:  // Confirm3
      if (step.call.cancelled) {
        if (Status owned = set_ram_owned(*ram, true); !owned) {
          spdlog::error("libvirt relay: migration of {} cancelled: {}", domain.name, owned.error().message());
        }
      }
      break;
  }
  std::lock_guard lock(mutex_);
  awaiting_reply_[header->serial] = std::move(step);
  return rpc::UriRewriter::FromClient{std::move(packet)};
}

Result<std::string> MigrationRelay::from_daemon(std::string packet) {
  auto header = rpc::parse_header(packet);
  if (!header) return fail(header.error());
  if (header->program != rpc::kRemoteProgram || header->type != rpc::MessageType::kReply) return packet;
  if (header->procedure == rpc::kProcMigrateFinish3 && header->status == rpc::MessageStatus::kOk) {
    finished_here(packet);
    return packet;
  }
  Step step;
  {
    std::lock_guard lock(mutex_);
    auto it = awaiting_reply_.find(header->serial);
    if (it == awaiting_reply_.end() || it->second.call.procedure != header->procedure) return packet;
    step = std::move(it->second);
    awaiting_reply_.erase(it);
  }
  const std::string& name = step.call.domain.name;
  const std::string& uuid = step.call.domain.uuid;
  auto resume_if_paused_here = [&] {
    bool paused;
    {
      std::lock_guard lock(mutex_);
      paused = paused_.erase(uuid) > 0;
    }
    if (!paused) return;
    if (Status resumed = host_.resume(uuid); !resumed) {
      spdlog::error("libvirt relay: domain {} stays paused: {}", name, resumed.error().message());
    }
  };
  const bool ok = header->status == rpc::MessageStatus::kOk;
  if (step.call.procedure == rpc::kProcMigrateConfirm3) {
    if (step.call.cancelled) resume_if_paused_here();
    std::lock_guard lock(mutex_);
    paused_.erase(uuid);
    return packet;
  }
  if (!ok) {
    if (step.call.procedure == rpc::kProcMigratePerform3) resume_if_paused_here();
    return packet;
  }
  auto failed = [&](const Error& reason) {
    spdlog::warn("libvirt relay: migration of {}: {}", name, reason.message());
    return rpc::error_reply(*header, rpc::kErrorOperationFailed, rpc::kFromRemote,
                            fmt::format("vmpod: domain {} (RAM in memory pods): {}", name, reason.message()));
  };
  if (step.call.procedure == rpc::kProcMigrateBegin3) {
    auto regions = ram_regions(step.ram_file);
    if (!regions) return failed(regions.error());
    auto running = host_.running(uuid);
    if (!running) return failed(running.error());
    auto edited = rpc::edit_begin3_xml(
        packet, [&](std::string_view xml) { return with_ram_handover(xml, *regions, *running); });
    if (!edited) return failed(edited.error());
    return *edited;
  }
  // Perform3 is over: the source QEMU has sent its devices. Its file lets
  // go of the regions (Confirm3 takes them back if the move is cancelled).
  if (Status released = set_ram_owned(step.ram_file, false); !released) {
    resume_if_paused_here();
    return failed(released.error());
  }
  spdlog::info("libvirt relay: domain {} sent without its RAM", name);
  return packet;
}

void MigrationRelay::finished_here(std::string_view packet) {
  // The guest runs here now: this host's file frees its regions from now
  // on, and the guest runs on if it ran on the source.
  auto domain = rpc::finish3_domain(packet);
  if (!domain) {
    spdlog::warn("libvirt relay: a Finish3 reply: {}", domain.error().message());
    return;
  }
  auto ram = host_.ram_file(domain->name, domain->id);
  if (!ram || ram_owned(*ram)) return;
  if (Status owned = set_ram_owned(*ram, true); !owned) {
    spdlog::error("libvirt relay: domain {} moved in: {}", domain->name, owned.error().message());
  }
  const std::string resume = resume_path(host_.memory_backing_dir(), domain->uuid);
  if (::unlink(resume.c_str()) == 0) {
    if (Status resumed = host_.resume(domain->uuid); !resumed) {
      spdlog::error("libvirt relay: domain {} moved in paused: {}", domain->name, resumed.error().message());
    }
  }
  spdlog::info("libvirt relay: domain {} moved in without its RAM", domain->name);
}

}  // namespace vmpod::libvirt
