#!/usr/bin/env bash
# The monitor verbs against a VM that `vmpod run` keeps running: `ls`
# names its sockets, `qmp` and `hmp` reach vmpod's commands and QEMU's,
# `events` follows what `stop` and `cont` cause, `snapshot` and `fork` make
# a clone, `rm` removes it, and Ctrl-C (SIGINT) to `vmpod run` leaves no
# process, mount or socket behind.
set -euo pipefail
vmpod=${VMPOD_BINARY:?run through meson test}
dir=$(mktemp -d /tmp/vmpod-test-monitor-cli.XXXXXX)
run_pid=
cleanup() {
  [ -n "$run_pid" ] && kill -KILL "$run_pid" 2>/dev/null || true
  pkill -KILL -f -- "--listen unix:$dir/run/" 2>/dev/null || true
  grep -q " $dir/run/" /proc/mounts && umount -l $(awk -v d="$dir/run/" '$2 ~ "^"d {print $2}' /proc/mounts) || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- vmpod run"; cat "$dir/run.out" || true; exit 1; }
export VMPOD_VMM=unix:$dir/run/vmm.sock

"$vmpod" run --dir "$dir/run" -m 256M --qmp-tcp 127.0.0.1:0 </dev/null >"$dir/run.out" 2>&1 &
run_pid=$!
for _ in $(seq 300); do
  "$vmpod" ls 2>/dev/null | grep -q "^vm0 .* running" && break
  sleep 0.2
done
"$vmpod" ls | grep -q "^vm0 .* running" || fail "vm0 never ran"

ls_json=$("$vmpod" ls --json)
echo "$ls_json" | grep -q "\"hmp-endpoint\": \"$dir/run/vmm/vm0.hmp\"" || fail "ls --json: no hmp endpoint: $ls_json"
echo "$ls_json" | grep -q '"qmp-tcp-endpoint": "tcp:127.0.0.1:' || fail "ls --json: no tcp endpoint: $ls_json"

"$vmpod" hmp vm0 'info pods' | grep -q "^mem1 *memory *healthy" || fail "hmp info pods"
[ "$("$vmpod" hmp vm0 'info status' | tr -d '\r')" = "VM status: running" ] || fail "hmp info status"
"$vmpod" qmp vm0 x-vmpod-query-vm | grep -q '"state": "running"' || fail "qmp x-vmpod-query-vm"
printf 'query-name\nno-such-command\n' | "$vmpod" qmp vm0 --json >"$dir/stream" && fail "a failing command in a stream exited 0"
grep -q '"return":{"name":"vm0"}' "$dir/stream" || fail "qmp stream: $(cat "$dir/stream")"
grep -q '"class":"CommandNotFound"' "$dir/stream" || fail "qmp stream: $(cat "$dir/stream")"

"$vmpod" events vm0 --count 4 --timeout 60 >"$dir/events" &
events_pid=$!
sleep 1
"$vmpod" qmp vm0 stop >/dev/null
"$vmpod" ls | grep -q "^vm0 .* paused" || fail "ls does not show vm0 paused"
"$vmpod" qmp vm0 cont >/dev/null
wait "$events_pid" || fail "vmpod events failed: $(cat "$dir/events")"
for event in STOP RESUME 'X_VMPOD_VM_STATE {"reason":"QEMU event STOP","state":"paused"}' \
             'X_VMPOD_VM_STATE {"reason":"QEMU event RESUME","state":"running"}'; do
  grep -qF " $event" "$dir/events" || fail "events lack '$event': $(cat "$dir/events")"
done

# Snapshot and fork from the command line; Ctrl-C below must end the clone too.
"$vmpod" snapshot vm0 ready | grep -q "^snapshot ready of vm0: " || fail "vmpod snapshot"
"$vmpod" snapshots --json | grep -q '"name": "ready"' || fail "snapshots --json: $("$vmpod" snapshots --json)"
"$vmpod" snapshot vm0 ready 2>"$dir/again" && fail "a second snapshot named ready was taken"
grep -q "exists" "$dir/again" || fail "taking ready twice: $(cat "$dir/again")"
"$vmpod" fork ready -n 1 --json | grep -q '"name": "ready-0"' || fail "vmpod fork"
"$vmpod" ls | grep -q "^ready-0 .* running" || fail "ls does not show the clone: $("$vmpod" ls)"
"$vmpod" hmp vm0 'info vmpod-snapshots' | grep -q "^ready  *vm0 .* 1  -" || fail "hmp info vmpod-snapshots: $("$vmpod" hmp vm0 'info vmpod-snapshots')"
[ "$("$vmpod" exec ready-0 'echo from the clone')" = "from the clone" ] || fail "exec in the clone"
"$vmpod" snapshot-delete ready || fail "snapshot-delete"
"$vmpod" snapshots | grep -q "^ready " && fail "ready is still listed"
"$vmpod" fork ready 2>/dev/null && fail "forked a deleted snapshot"
# rm: a running clone only with --force, and then it is gone with its socket.
"$vmpod" rm ready-0 2>"$dir/rm" && fail "removed a running clone"
grep -q "stop it first" "$dir/rm" || fail "rm of a running clone: $(cat "$dir/rm")"
"$vmpod" rm --force ready-0 || fail "rm --force"
"$vmpod" ls | grep -q "^ready-0 " && fail "ready-0 is still listed"
[ -e "$dir/run/vmm/ready-0.qmp" ] && fail "ready-0's QMP socket is left"

kill -INT "$run_pid"
wait "$run_pid" && rc=0 || rc=$?
run_pid=
[ "$rc" -eq 130 ] || fail "vmpod run exited $rc after SIGINT, expected 130"
if pgrep -f -- "--listen unix:$dir/run/" >/dev/null; then fail "pods still running"; fi
if grep -q " $dir/run/" /proc/mounts; then fail "podfs still mounted"; fi
[ ! -e "$dir/run/vmm/vm0.qmp" ] || fail "the QMP socket is left behind"
echo "1 passed, 0 failed"
