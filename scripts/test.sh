#!/usr/bin/env bash
# Sets everything up and runs every test suite: unit, fuzz replay and
# integration on the main build, then the unit tests again under
# AddressSanitizer and UndefinedBehaviorSanitizer, and each benchmark's
# --quick mode so none of them rots.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
meson test -C build --print-errorlogs --suite unit --suite fuzz --suite integration --suite bench
[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
ninja -C build-asan
meson test -C build-asan --print-errorlogs --suite unit
