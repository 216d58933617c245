// Fresh identities are well formed and differ; the checks refuse what
// would not be a UUID or a unicast MAC, including text that would smuggle
// options onto QEMU's command line.
#include <criterion/criterion.h>

#include <algorithm>
#include <set>
#include <string>

#include <vmpod/cpuserver/guest_identity.h>
#include <vmpod/cpuserver/qemu.h>

using namespace vmpod;
using namespace vmpod::cpuserver;

Test(guest_identity, fresh_ids_are_valid_and_distinct) {
  std::set<std::string> ids, macs, machine_ids;
  for (int i = 0; i < 100; ++i) {
    std::string id = new_generation_id();
    cr_assert(check_generation_id(id).has_value(), "%s", id.c_str());
    cr_assert_eq(id[14], '4', "version 4: %s", id.c_str());
    cr_assert(std::string("89ab").find(id[19]) != std::string::npos, "RFC 4122 variant: %s", id.c_str());
    std::string mac = new_mac();
    cr_assert(check_mac(mac).has_value(), "%s", mac.c_str());
    cr_assert_eq(mac.substr(0, 3), "02:", "locally administered: %s", mac.c_str());
    std::string machine_id = new_machine_id();
    cr_assert_eq(machine_id.size(), 32u);
    cr_assert(std::all_of(machine_id.begin(), machine_id.end(), [](char c) { return std::isxdigit(c); }));
    ids.insert(id);
    macs.insert(mac);
    machine_ids.insert(machine_id);
  }
  cr_assert_eq(ids.size(), 100u);
  cr_assert_eq(macs.size(), 100u);
  cr_assert_eq(machine_ids.size(), 100u);
}

Test(guest_identity, checks_refuse_malformed) {
  cr_assert(check_generation_id("2f5b1c4e-8a3d-4c2b-9e1f-0a1b2c3d4e5f").has_value());
  for (const char* bad : {"", "2f5b1c4e8a3d4c2b9e1f0a1b2c3d4e5f", "2f5b1c4e-8a3d-4c2b-9e1f-0a1b2c3d4e5g",
                          "2f5b1c4e-8a3d-4c2b-9e1f-0a1b2c3d4e5f,id=x", "2f5b1c4e-8a3d-4c2b-9e1f+0a1b2c3d4e5f"}) {
    auto checked = check_generation_id(bad);
    cr_assert(!checked.has_value(), "'%s' accepted", bad);
    cr_assert_eq(checked.error().code(), ErrorCode::kInvalidArgument);
  }
  cr_assert(check_mac("52:54:00:12:34:56").has_value());
  for (const char* bad : {"", "52:54:00:12:34", "52-54-00-12-34-56", "01:00:5e:00:00:01" /* multicast */,
                          "52:54:00:12:34:56,x", "52:54:00:12:34:zz"}) {
    cr_assert(!check_mac(bad).has_value(), "'%s' accepted", bad);
  }
}

Test(guest_identity, command_line_carries_identity_and_code_disk) {
  QemuConfig config;
  config.guest.kernel = "/k";
  config.guest.code_disk = "/runs/a,b/code.img";
  config.guest.generation_id = "2f5b1c4e-8a3d-4c2b-9e1f-0a1b2c3d4e5f";
  config.guest.mac = "02:11:22:33:44:55";
  config.run_dir = "/run/g";
  auto args = qemu_command_line(config, Accel::kTcg);
  auto has = [&](const std::string& arg) { return std::find(args.begin(), args.end(), arg) != args.end(); };
  // A comma in the path is doubled, so it can not start another option.
  cr_assert(has("file=/runs/a,,b/code.img,if=none,id=code0,format=raw,readonly=on"));
  cr_assert(has("virtio-blk-pci,drive=code0,serial=vmpod-code"));
  cr_assert(has("vmgenid,id=vmgenid0,guid=2f5b1c4e-8a3d-4c2b-9e1f-0a1b2c3d4e5f"));
  cr_assert(has("user,id=net0,restrict=on"));
  cr_assert(has("virtio-net-pci,netdev=net0,mac=02:11:22:33:44:55"));

  QemuConfig plain;
  plain.guest.kernel = "/k";
  auto plain_args = qemu_command_line(plain, Accel::kTcg);
  for (const std::string& arg : plain_args) {
    cr_assert(arg.find("vmgenid") == std::string::npos && arg.find("netdev") == std::string::npos &&
                  arg.find("code0") == std::string::npos,
              "unasked device: %s", arg.c_str());
  }
}
