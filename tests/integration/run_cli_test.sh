#!/usr/bin/env bash
# `vmpod run -c CMD`, the README's main job without a terminal: a local
# cluster boots the guest, runs CMD through the agent, prints its output and
# the pods' statistics, exits with CMD's code, and leaves no process, mount
# or directory behind.
set -euo pipefail
vmpod=${VMPOD_BINARY:?run through meson test}
dir=$(mktemp -d /tmp/vmpod-test-run-cli.XXXXXX)
out=$dir/out
cleanup() {
  pkill -KILL -f -- "--listen unix:$dir/run/" 2>/dev/null || true
  grep -q " $dir/run/" /proc/mounts && umount -l $(awk -v d="$dir/run/" '$2 ~ "^"d {print $2}' /proc/mounts) || true
  rm -rf "$dir"
}
trap cleanup EXIT

set +e
timeout 240 "$vmpod" run --dir "$dir/run" -m 256M \
  -c 'vmpod-memcheck --size-mib 16 --seed 3 && exit 7' >"$out" 2>&1
rc=$?
set -e
fail() { echo "FAIL: $*"; echo "--- output"; cat "$out"; exit 1; }
[ "$rc" -eq 7 ] || fail "exit code $rc, expected the guest command's 7"
grep -q "MEMCHECK verified ok" "$out" || fail "memcheck did not verify"
grep -q "memory pod mem0:" "$out" || fail "no statistics for mem0"
grep -q "memory pod mem1:" "$out" || fail "no statistics for mem1"
grep -q "compute pod cpu0 (podfs)" "$out" || fail "no statistics for the compute pod"
if pgrep -f -- "--listen unix:$dir/run/" >/dev/null; then fail "pods still running"; fi
if grep -q " $dir/run/" /proc/mounts; then fail "podfs still mounted"; fi
echo "1 passed, 0 failed"
