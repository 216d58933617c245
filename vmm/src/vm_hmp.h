// The HMP face of the x-vmpod commands. `info pods`, `info memory`,
// `info cache`, `info vm` and `info vmpod-snapshots` run the same handlers as QMP and only format
// text; `help` and `info` list them after QEMU's own lines; every other
// line is QEMU's.
#pragma once

#include <string>
#include <string_view>

#include "vmpod_qapi.h"

namespace vmpod::vmm {

enum class HmpLine {
  kVmpod,  // one of ours: run_vmpod_hmp()
  kHelp,   // QEMU's help, then vmpod_hmp_help()
  kQemu,   // QEMU's alone
};
HmpLine classify_hmp(std::string_view command_line);

// The text of one of our lines; errors as QEMU's HMP prints them.
std::string run_vmpod_hmp(qapi::Commands& commands, std::string_view command_line);
// Our lines of `help` / `info`, in QEMU's "name -- what" shape.
std::string vmpod_hmp_help();

}  // namespace vmpod::vmm
