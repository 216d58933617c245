#include <vmpod/cpuserver/guest_identity.h>

#include <sys/random.h>

#include <array>
#include <cctype>
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

namespace vmpod::cpuserver {

namespace {

template <size_t N>
std::array<uint8_t, N> random_bytes() {
  std::array<uint8_t, N> bytes{};
  // getrandom(2) does not fail for 16 bytes once the pool is ready.
  if (::getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    throw std::runtime_error("getrandom failed");
  }
  return bytes;
}

bool is_hex(char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }

}  // namespace

std::string new_generation_id() {
  auto b = random_bytes<16>();
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                     b[14], b[15]);
}

std::string new_mac() {
  auto b = random_bytes<5>();
  return fmt::format("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4]);
}

std::string new_machine_id() {
  auto b = random_bytes<16>();
  std::string id;
  for (uint8_t byte : b) id += fmt::format("{:02x}", byte);
  return id;
}

Status check_generation_id(std::string_view id) {
  bool ok = id.size() == 36;
  for (size_t i = 0; ok && i < id.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    ok = dash ? id[i] == '-' : is_hex(id[i]);
  }
  if (!ok) return fail(ErrorCode::kInvalidArgument, "generation id '" + std::string(id) + "' is not a UUID");
  return {};
}

Status check_mac(std::string_view mac) {
  bool ok = mac.size() == 17;
  for (size_t i = 0; ok && i < mac.size(); ++i) ok = i % 3 == 2 ? mac[i] == ':' : is_hex(mac[i]);
  // The first octet's low bit marks a multicast address, which no NIC may own.
  if (ok && (std::stoi(std::string(mac.substr(0, 2)), nullptr, 16) & 1) != 0) ok = false;
  if (!ok) return fail(ErrorCode::kInvalidArgument, "'" + std::string(mac) + "' is not a unicast MAC address");
  return {};
}

}  // namespace vmpod::cpuserver
