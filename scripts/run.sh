#!/usr/bin/env bash
# Sets everything up and boots a guest whose RAM lives in two memory pods,
# all on this machine. Extra arguments go to `vmpod run` (see docs/cli.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
exec build/cli/vmpod run "$@"
