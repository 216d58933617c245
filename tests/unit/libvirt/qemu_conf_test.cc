// vmpod's block in libvirt's qemu.conf: added once, replaced on a second
// install, removed without touching the administrator's lines, refused when
// those lines already set memory_backing_dir; and the same on a real file,
// whose mode (qemu.conf is 0600) is kept.
#include <criterion/criterion.h>

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include <vmpod/base/file.h>
#include <vmpod/libvirt/qemu_conf.h>

using namespace vmpod;
using namespace vmpod::libvirt;

namespace {

const std::string kAdministrators =
    "# libvirt's commented defaults\n"
    "#memory_backing_dir = \"/var/lib/libvirt/qemu/ram\"\n"
    "user = \"libvirt-qemu\"\n"
    "\n";

size_t count_of(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++count;
  return count;
}

std::string g_dir;

void make_dir() {
  char pattern[] = "/tmp/vmpod-qemu-conf-test.XXXXXX";
  cr_assert_not_null(::mkdtemp(pattern));
  g_dir = pattern;
}

void remove_dir() {
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
}

}  // namespace

Test(qemu_conf, adds_one_block_and_keeps_the_administrators_lines) {
  auto conf = with_vmpod_block(kAdministrators, {"/run/vmpod/libvirt-ram"});
  cr_assert(conf.has_value(), "%s", conf ? "" : conf.error().to_string().c_str());
  cr_assert_eq(conf->rfind(kAdministrators, 0), 0u, "the administrator's lines moved: %s", conf->c_str());
  cr_assert_eq(count_of(*conf, "\nmemory_backing_dir = \"/run/vmpod/libvirt-ram\"\n"), 1u, "%s", conf->c_str());
  std::string removed = without_vmpod_block(*conf);
  cr_assert_str_eq(removed.c_str(), kAdministrators.c_str());
}

Test(qemu_conf, a_second_install_replaces_the_block) {
  auto first = with_vmpod_block(kAdministrators, {"/a"});
  cr_assert(first.has_value());
  auto again = with_vmpod_block(*first, {"/a"});
  cr_assert(again.has_value());
  cr_assert_str_eq(again->c_str(), first->c_str(), "installing twice is not idempotent");
  auto moved = with_vmpod_block(*first, {"/b"});
  cr_assert(moved.has_value());
  cr_assert_eq(count_of(*moved, "memory_backing_dir = "), 2u, "%s", moved->c_str());  // one is the comment
  cr_assert_eq(count_of(*moved, "memory_backing_dir = \"/b\""), 1u);
  cr_assert_eq(count_of(*moved, "\"/a\""), 0u, "the old block stayed: %s", moved->c_str());
}

Test(qemu_conf, refuses_when_the_administrator_set_the_key) {
  auto conf = with_vmpod_block(kAdministrators + "  memory_backing_dir=\"/srv/ram\"\n", {"/a"});
  cr_assert(!conf.has_value());
  cr_assert_eq(conf.error().code(), ErrorCode::kAlreadyExists);
  cr_assert(conf.error().message().find("/srv/ram") != std::string::npos, "%s", conf.error().message().c_str());
}

Test(qemu_conf, refuses_values_qemu_conf_cannot_quote) {
  for (const char* bad : {"", "/a\"b", "/a\nb", "/a\\b"}) {
    auto conf = with_vmpod_block(kAdministrators, {bad});
    cr_assert(!conf.has_value(), "accepted \"%s\"", bad);
    cr_assert_eq(conf.error().code(), ErrorCode::kInvalidArgument);
  }
}

Test(qemu_conf, a_file_without_the_block_comes_back_unchanged) {
  std::string no_newline = "user = \"root\"";
  std::string removed = without_vmpod_block(no_newline);
  cr_assert_str_eq(removed.c_str(), no_newline.c_str());
  auto added = with_vmpod_block(no_newline, {"/a"});
  cr_assert(added.has_value());
  cr_assert_eq(added->rfind("user = \"root\"\n# BEGIN vmpod", 0), 0u, "%s", added->c_str());
}

Test(qemu_conf, installs_and_uninstalls_a_file_keeping_its_mode, .init = make_dir, .fini = remove_dir) {
  std::string path = g_dir + "/qemu.conf";
  cr_assert(write_file(path, kAdministrators).has_value());
  cr_assert_eq(::chmod(path.c_str(), 0600), 0);
  auto installed = install_qemu_conf(path, {"/run/vmpod/libvirt-ram"});
  cr_assert(installed.has_value(), "%s", installed ? "" : installed.error().to_string().c_str());
  cr_assert(install_qemu_conf(path, {"/run/vmpod/libvirt-ram"}).has_value());
  struct stat st {};
  cr_assert_eq(::stat(path.c_str(), &st), 0);
  cr_assert_eq(st.st_mode & 07777, 0600u, "mode became %o", st.st_mode & 07777);
  auto conf = read_file(path);
  cr_assert(conf.has_value());
  cr_assert_eq(count_of(*conf, "memory_backing_dir = \"/run/vmpod/libvirt-ram\""), 1u);
  cr_assert(uninstall_qemu_conf(path).has_value());
  cr_assert(uninstall_qemu_conf(path).has_value());
  conf = read_file(path);
  cr_assert(conf.has_value());
  cr_assert_str_eq(conf->c_str(), kAdministrators.c_str());
  cr_assert(!std::filesystem::exists(path + ".partial"));
}

Test(qemu_conf, install_without_libvirt_says_so, .init = make_dir, .fini = remove_dir) {
  auto installed = install_qemu_conf(g_dir + "/missing.conf", {"/a"});
  cr_assert(!installed.has_value());
  cr_assert(installed.error().to_string().find("libvirt installed") != std::string::npos, "%s",
            installed.error().to_string().c_str());
  cr_assert(uninstall_qemu_conf(g_dir + "/missing.conf").has_value(), "uninstall with nothing installed failed");
}
