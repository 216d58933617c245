// vmpod's QEMU hook without libvirt: the script install writes (refusing
// another program's hook, idempotent, removed only if it is vmpod's), and
// run_qemu_hook's answers before it touches a podfs: operations it ignores,
// domains it leaves alone, and refusals that say why.
#include <criterion/criterion.h>

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include <vmpod/base/file.h>
#include <vmpod/libvirt/hook.h>

using namespace vmpod;
using namespace vmpod::libvirt;

namespace {

std::string g_dir;

void make_dir() {
  char pattern[] = "/tmp/vmpod-hook-test.XXXXXX";
  cr_assert_not_null(::mkdtemp(pattern));
  g_dir = pattern;
}

void remove_dir() {
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
}

const std::string kPlaced =
    "<domain id='4'><name>d</name><memoryBacking><source type='file'/></memoryBacking>"
    "<metadata><vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' pods='1'/></metadata></domain>";

}  // namespace

TestSuite(hook, .init = make_dir, .fini = remove_dir);

Test(hook, installs_an_executable_script_once) {
  std::string hooks = g_dir + "/hooks";
  cr_assert(install_qemu_hook(hooks, "/usr/bin/vmpod", "/run/vmpod/libvirt-ram").has_value());
  auto script = read_file(hooks + "/qemu");
  cr_assert(script.has_value());
  cr_assert(script->rfind("#!/bin/sh\n", 0) == 0, "%s", script->c_str());
  cr_assert(script->find("exec '/usr/bin/vmpod' libvirt hook --memory-backing-dir '/run/vmpod/libvirt-ram' \"$@\"") !=
                std::string::npos,
            "%s", script->c_str());
  struct stat st {};
  cr_assert_eq(::stat((hooks + "/qemu").c_str(), &st), 0);
  cr_assert_eq(st.st_mode & 0777, 0755u);
  cr_assert(install_qemu_hook(hooks, "/usr/bin/vmpod", "/run/vmpod/libvirt-ram").has_value());
  cr_assert(install_qemu_hook(hooks, "/opt/vmpod", "/run/vmpod/libvirt-ram").has_value(), "vmpod's own hook not replaced");
  cr_assert(uninstall_qemu_hook(hooks).has_value());
  cr_assert(!std::filesystem::exists(hooks + "/qemu"));
  cr_assert(uninstall_qemu_hook(hooks).has_value());
  cr_assert(!install_qemu_hook(hooks, "/it's/vmpod", "/run").has_value(), "a path the script cannot quote");
}

Test(hook, leaves_another_programs_hook_alone) {
  std::string hooks = g_dir + "/hooks";
  std::filesystem::create_directories(hooks);
  cr_assert(write_file(hooks + "/qemu", "#!/bin/sh\nexit 0\n").has_value());
  auto installed = install_qemu_hook(hooks, "/usr/bin/vmpod", "/run/vmpod/libvirt-ram");
  cr_assert(!installed.has_value());
  cr_assert_eq(installed.error().code(), ErrorCode::kAlreadyExists);
  cr_assert(uninstall_qemu_hook(hooks).has_value());
  auto script = read_file(hooks + "/qemu");
  cr_assert(script.has_value() && *script == "#!/bin/sh\nexit 0\n", "another program's hook was changed");
}

Test(hook, ignores_other_operations_and_domains_without_the_element) {
  cr_assert(run_qemu_hook(g_dir, "stopped", "end", "not even XML").has_value());
  const char* plain = "<domain id='1'><name>plain</name><uuid>8a385a63-8db3-40fd-b937-40dd2c13a674</uuid></domain>";
  for (const char* operation : {"prepare", "started", "migrate"}) {
    auto done = run_qemu_hook(g_dir, operation, "begin", plain);
    cr_assert(done.has_value(), "%s: %s", operation, done ? "" : done.error().to_string().c_str());
    cr_assert(done->empty(), "%s printed XML for a domain vmpod does not move", operation);
  }
  cr_assert(!std::filesystem::exists(g_dir + "/libvirt"), "a domain without the element got a directory");
}

Test(hook, refuses_with_reasons) {
  auto malformed = run_qemu_hook(g_dir, "prepare", "begin", "<domain");
  cr_assert(!malformed.has_value());
  auto not_file = run_qemu_hook(
      g_dir, "prepare", "begin",
      "<domain id='1'><name>d</name><metadata><vmpod:memory xmlns:vmpod='https://vmpod.dev/xmlns/libvirt/1' "
      "pods='1'/></metadata></domain>");
  cr_assert(!not_file.has_value());
  cr_assert(not_file.error().to_string().find("<memoryBacking><source type='file'/>") != std::string::npos, "%s",
            not_file.error().to_string().c_str());
  // No podfs here: the message says what to start.
  auto no_podfs = run_qemu_hook(g_dir, "prepare", "begin", kPlaced);
  cr_assert(!no_podfs.has_value());
  cr_assert(no_podfs.error().to_string().find("vmpod libvirt backing") != std::string::npos, "%s",
            no_podfs.error().to_string().c_str());
  cr_assert(!std::filesystem::exists(g_dir + "/libvirt"), "a refused prepare left a directory");
}

Test(hook, release_removes_what_is_left) {
  std::string dir = g_dir + "/libvirt/qemu/4-d";
  std::filesystem::create_directories(dir);
  cr_assert(write_file(dir + "/pc.ram", "x").has_value());
  cr_assert(run_qemu_hook(g_dir, "release", "end", kPlaced).has_value());
  cr_assert(!std::filesystem::exists(dir));
  cr_assert(run_qemu_hook(g_dir, "release", "end", kPlaced).has_value(), "a second release failed");
}
