#include <vmpod/libvirt/rpc.h>

#include <fmt/format.h>

namespace vmpod::libvirt::rpc {

namespace {

constexpr std::string_view kVmpodUri = "vmpod:///system";
constexpr std::string_view kQemuUri = "qemu:///system";

uint32_t load_u32(std::string_view bytes, size_t at) {
  auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[at + i])); };
  return byte(0) << 24 | byte(1) << 16 | byte(2) << 8 | byte(3);
}

void append_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

void append_string(std::string& out, std::string_view text) {
  append_u32(out, static_cast<uint32_t>(text.size()));
  out += text;
  out.append((4 - text.size() % 4) % 4, '\0');
}

// remote_string: a pointer in XDR, a "present" word then the string.
void append_optional_string(std::string& out, const std::optional<std::string_view>& text) {
  append_u32(out, text ? 1 : 0);
  if (text) append_string(out, *text);
}

// Reads XDR from one packet's payload; every read checks its bounds.
class XdrReader {
 public:
  explicit XdrReader(std::string_view bytes, size_t at) : bytes_(bytes), at_(at) {}

  Result<uint32_t> u32(std::string_view what) {
    if (bytes_.size() - at_ < 4) return fail(truncated(what));
    uint32_t value = load_u32(bytes_, at_);
    at_ += 4;
    return value;
  }

  Result<std::string_view> string(std::string_view what) {
    auto length = u32(what);
    if (!length) return fail(length.error());
    if (*length > kMaxString) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("{}: a string of {} bytes", what, *length));
    }
    size_t padded = (*length + 3u) / 4u * 4u;
    if (bytes_.size() - at_ < padded) return fail(truncated(what));
    std::string_view text = bytes_.substr(at_, *length);
    at_ += padded;
    return text;
  }

  Result<std::optional<std::string_view>> optional_string(std::string_view what) {
    auto present = u32(what);
    if (!present) return fail(present.error());
    if (*present > 1) return fail(ErrorCode::kInvalidArgument, fmt::format("{}: not a remote_string", what));
    if (*present == 0) return std::optional<std::string_view>();
    auto text = string(what);
    if (!text) return fail(text.error());
    return std::optional<std::string_view>(*text);
  }

  Result<std::string_view> opaque(std::string_view what) { return string(what); }

  Result<std::string_view> fixed(size_t length, std::string_view what) {
    if (bytes_.size() - at_ < length) return fail(truncated(what));
    std::string_view bytes = bytes_.substr(at_, length);
    at_ += (length + 3u) / 4u * 4u;
    return bytes;
  }

  Status skip(size_t length, std::string_view what) {
    if (bytes_.size() - at_ < length) return fail(truncated(what));
    at_ += length;
    return {};
  }

  // remote_nonnull_domain: name, 16-byte uuid, id.
  Result<DomainRef> domain(std::string_view what) {
    auto name = string(what);
    if (!name) return fail(name.error());
    auto uuid = fixed(16, what);
    if (!uuid) return fail(uuid.error());
    auto id = u32(what);
    if (!id) return fail(id.error());
    std::string text;
    for (size_t i = 0; i < 16; ++i) {
      if (i == 4 || i == 6 || i == 8 || i == 10) text += '-';
      text += fmt::format("{:02x}", static_cast<unsigned char>((*uuid)[i]));
    }
    return DomainRef{std::string(*name), text, static_cast<int32_t>(*id)};
  }

  // remote_typed_param<kMaxTypedParams>, read past.
  Status typed_params(std::string_view what) {
    auto count = u32(what);
    if (!count) return fail(count.error());
    if (*count > kMaxTypedParams) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("{}: {} typed parameters", what, *count));
    }
    for (uint32_t i = 0; i < *count; ++i) {
      if (auto field = string(what); !field) return fail(field.error());
      auto type = u32(what);
      if (!type) return fail(type.error());
      switch (*type) {
        case 1: case 2: case 6: VMPOD_TRY_CTX(skip(4, what), "a typed parameter"); break;  // int, uint, boolean
        case 3: case 4: case 5: VMPOD_TRY_CTX(skip(8, what), "a typed parameter"); break;  // llong, ullong, double
        case 7:
          if (auto text = string(what); !text) return fail(text.error());
          break;
        default: return fail(ErrorCode::kInvalidArgument, fmt::format("{}: typed parameter of type {}", what, *type));
      }
    }
    return {};
  }

  size_t position() const { return at_; }

 private:
  Error truncated(std::string_view what) const {
    return Error(ErrorCode::kInvalidArgument, fmt::format("{}: packet ends at byte {}", what, bytes_.size()));
  }

  std::string_view bytes_;
  size_t at_;
};

// The packet with its header and `payload`.
std::string with_payload(std::string_view packet, std::string_view payload) {
  std::string out;
  out.reserve(kLengthBytes + kHeaderBytes + payload.size());
  append_u32(out, static_cast<uint32_t>(kLengthBytes + kHeaderBytes + payload.size()));
  out += packet.substr(kLengthBytes, kHeaderBytes);
  out += payload;
  return out;
}

bool is_remote_call(const Header& header, int32_t procedure) {
  return header.program == kRemoteProgram && header.type == MessageType::kCall && header.procedure == procedure;
}

}  // namespace

Result<std::optional<MigrationCall>> migration_call(const Header& header, std::string_view packet) {
  const int32_t procedure = header.procedure;
  if (header.program != kRemoteProgram || header.type != MessageType::kCall ||
      (procedure != kProcMigrateBegin3 && procedure != kProcMigratePerform3 && procedure != kProcMigrateConfirm3)) {
    return std::optional<MigrationCall>();
  }
  XdrReader reader(packet, kLengthBytes + kHeaderBytes);
  MigrationCall call;
  call.procedure = procedure;
  auto domain = reader.domain("migration call");
  if (!domain) return fail(domain.error());
  call.domain = *domain;
  if (procedure == kProcMigratePerform3) {
    if (auto dconnuri = reader.optional_string("perform3 dconnuri"); !dconnuri) return fail(dconnuri.error());
  }
  VMPOD_TRY_CTX(reader.typed_params("migration parameters"), "migration call");
  if (procedure != kProcMigrateBegin3) {
    if (auto cookie = reader.opaque("migration cookie"); !cookie) return fail(cookie.error());
  }
  auto flags = reader.u32("migration flags");
  if (!flags) return fail(flags.error());
  call.flags = *flags;
  if (procedure == kProcMigrateConfirm3) {
    auto cancelled = reader.u32("confirm3 cancelled");
    if (!cancelled) return fail(cancelled.error());
    call.cancelled = *cancelled != 0;
  }
  return std::optional<MigrationCall>(call);
}

Result<DomainRef> finish3_domain(std::string_view packet) {
  XdrReader reader(packet, kLengthBytes + kHeaderBytes);
  return reader.domain("finish3 reply");
}

Result<std::string> edit_begin3_xml(std::string_view packet,
                                    const std::function<Result<std::string>(std::string_view)>& edit) {
  XdrReader reader(packet, kLengthBytes + kHeaderBytes);
  auto cookie = reader.opaque("begin3 cookie");
  if (!cookie) return fail(cookie.error());
  const size_t xml_at = reader.position();
  auto xml = reader.string("begin3 xml");
  if (!xml) return fail(xml.error());
  auto edited = edit(*xml);
  if (!edited) return fail(edited.error());
  std::string payload(packet.substr(kLengthBytes + kHeaderBytes, xml_at - kLengthBytes - kHeaderBytes));
  append_string(payload, *edited);
  payload += packet.substr(reader.position());
  return with_payload(packet, payload);
}

Result<std::optional<std::string>> edit_domain_xml_call(const Header& header, std::string_view packet,
                                                        const std::function<Result<std::string>(std::string_view)>& edit) {
  if (!is_remote_call(header, kProcDomainCreateXml) && !is_remote_call(header, kProcDomainDefineXml) &&
      !is_remote_call(header, kProcDomainDefineXmlFlags)) {
    return std::optional<std::string>();
  }
  // The XML is the call's first argument (the flags, if any, follow it).
  XdrReader reader(packet, kLengthBytes + kHeaderBytes);
  auto xml = reader.string("domain xml");
  if (!xml) return fail(xml.error());
  auto edited = edit(*xml);
  if (!edited) return fail(edited.error());
  std::string payload;
  append_string(payload, *edited);
  payload += packet.substr(reader.position());
  return std::optional<std::string>(with_payload(packet, payload));
}

Result<uint32_t> packet_length(std::string_view length_word) {
  if (length_word.size() != kLengthBytes) {
    return fail(ErrorCode::kInvalidArgument, "a length word is 4 bytes");
  }
  uint32_t length = load_u32(length_word, 0);
  if (length < kLengthBytes + kHeaderBytes || length > kMaxPacketBytes) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("packet length {} outside {}..{}", length, kLengthBytes + kHeaderBytes, kMaxPacketBytes));
  }
  return length;
}

Result<Header> parse_header(std::string_view packet) {
  if (packet.size() < kLengthBytes) return fail(ErrorCode::kInvalidArgument, "packet shorter than its length word");
  auto length = packet_length(packet.substr(0, kLengthBytes));
  if (!length) return fail(length.error());
  if (*length != packet.size()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("packet of {} bytes says it has {}", packet.size(), *length));
  }
  Header header;
  header.program = load_u32(packet, 4);
  header.version = load_u32(packet, 8);
  header.procedure = static_cast<int32_t>(load_u32(packet, 12));
  uint32_t type = load_u32(packet, 16);
  header.serial = load_u32(packet, 20);
  uint32_t status = load_u32(packet, 24);
  if (type > static_cast<uint32_t>(MessageType::kStreamHole)) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("unknown message type {}", type));
  }
  if (status > static_cast<uint32_t>(MessageStatus::kContinue)) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("unknown message status {}", status));
  }
  header.type = static_cast<MessageType>(type);
  header.status = static_cast<MessageStatus>(status);
  return header;
}

Result<uint32_t> fd_count(const Header& header, std::string_view packet) {
  if (header.type != MessageType::kCallWithFds && header.type != MessageType::kReplyWithFds) return 0u;
  XdrReader reader(packet, kLengthBytes + kHeaderBytes);
  auto count = reader.u32("descriptor count");
  if (!count) return fail(count.error());
  if (*count > kMaxFds) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} descriptors, libvirt sends at most {}", *count, kMaxFds));
  }
  return *count;
}

std::string error_reply(const Header& call, int32_t code, int32_t domain, std::string_view message) {
  std::string out(kLengthBytes, '\0');  // the length word, filled in below
  append_u32(out, call.program);
  append_u32(out, call.version);
  append_u32(out, static_cast<uint32_t>(call.procedure));
  append_u32(out, static_cast<uint32_t>(MessageType::kReply));
  append_u32(out, call.serial);
  append_u32(out, static_cast<uint32_t>(MessageStatus::kError));
  // remote_error: code, domain, message, level, dom, str1..3, int1, int2, net.
  append_u32(out, static_cast<uint32_t>(code));
  append_u32(out, static_cast<uint32_t>(domain));
  append_optional_string(out, message);
  append_u32(out, 2);  // VIR_ERR_ERROR
  append_u32(out, 0);
  for (int i = 0; i < 3; ++i) append_optional_string(out, std::nullopt);
  append_u32(out, 0);
  append_u32(out, 0);
  append_u32(out, 0);
  std::string length;
  append_u32(length, static_cast<uint32_t>(out.size()));
  out.replace(0, kLengthBytes, length);
  return out;
}

Result<std::optional<std::string>> libvirtd_uri(std::string_view client_uri) {
  if (!client_uri.starts_with("vmpod:")) return std::optional<std::string>();
  if (client_uri.starts_with(kVmpodUri)) {
    std::string_view query = client_uri.substr(kVmpodUri.size());
    if (query.empty() || query.front() == '?') {
      return std::optional<std::string>(std::string(kQemuUri) + std::string(query));
    }
  }
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("vmpod serves only {} (libvirt's QEMU driver with guest RAM in memory pods), not {}",
                          kVmpodUri, client_uri));
}

Result<UriRewriter::FromClient> UriRewriter::from_client(std::string packet) {
  auto header = parse_header(packet);
  if (!header) return fail(header.error());
  if (is_remote_call(*header, kProcConnectGetUri)) {
    std::lock_guard lock(mutex_);
    if (!client_uri_.empty()) get_uri_calls_.insert(header->serial);
    return FromClient{std::move(packet)};
  }
  if (!is_remote_call(*header, kProcConnectOpen)) return FromClient{std::move(packet)};

  XdrReader reader(packet, kLengthBytes + kHeaderBytes);
  auto name = reader.optional_string("connect-open name");
  if (!name) return fail(name.error());
  auto flags = reader.u32("connect-open flags");
  if (!flags) return fail(flags.error());
  if (!*name) return FromClient{std::move(packet)};
  auto daemon_uri = libvirtd_uri(**name);
  if (!daemon_uri) {
    return FromClient{error_reply(*header, kErrorInvalidArg, kFromRemote, daemon_uri.error().message()), true};
  }
  if (!*daemon_uri) return FromClient{std::move(packet)};
  {
    std::lock_guard lock(mutex_);
    client_uri_ = std::string(**name);
  }
  std::string payload;
  append_optional_string(payload, std::string_view(**daemon_uri));
  append_u32(payload, *flags);
  payload += std::string_view(packet).substr(reader.position());
  return FromClient{with_payload(packet, payload)};
}

Result<std::string> UriRewriter::from_daemon(std::string packet) {
  auto header = parse_header(packet);
  if (!header) return fail(header.error());
  if (header->program != kRemoteProgram || header->type != MessageType::kReply ||
      header->procedure != kProcConnectGetUri) {
    return packet;
  }
  std::string uri;
  {
    std::lock_guard lock(mutex_);
    if (get_uri_calls_.erase(header->serial) == 0) return packet;
    uri = client_uri_;
  }
  if (header->status != MessageStatus::kOk) return packet;
  XdrReader reader(packet, kLengthBytes + kHeaderBytes);
  auto daemon_uri = reader.string("connect-get-uri reply");
  if (!daemon_uri) return fail(daemon_uri.error());
  std::string payload;
  append_string(payload, uri);
  payload += std::string_view(packet).substr(reader.position());
  return with_payload(packet, payload);
}

}  // namespace vmpod::libvirt::rpc
