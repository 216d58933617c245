#!/usr/bin/env bash
# `vmpod stress`, end to end through the CLI on a lasting `vmpod cluster`:
#  1. stress-ng memory and CPU stressors in 8 clones for 3 iterations; the
#     report's counts match what the guests printed;
#  2. new code under test, a second invocation: the clones run it, and the
#     base snapshot is reused, not rebuilt;
#  3. a command failing in one of every three runs by its seed: exactly those
#     runs fail, with their console; `replay` forks the failure and
#     `replay --rerun` fails the same way;
#  4. Ctrl-C midway: exit 130, and no clone, QEMU, mount or region is left.
set -euo pipefail
vmpod=${VMPOD_BINARY:?run through meson test}
dir=$(mktemp -d /tmp/vmpod-test-stress.XXXXXX)
cluster_dir=$dir/cluster
state=$dir/state
export VMPOD_VMM=unix:$cluster_dir/vmm.sock
cluster_pid=
cleanup() {
  if [ -n "$cluster_pid" ]; then
    kill -TERM "$cluster_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$cluster_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$cluster_pid" 2>/dev/null || true
  fi
  pkill -KILL -f -- "--listen unix:$cluster_dir/" 2>/dev/null || true
  pkill -KILL -f -- "$cluster_dir/" 2>/dev/null || true
  for m in $(awk -v d="$cluster_dir/" 'index($2, d) == 1 {print $2}' /proc/mounts); do umount -l "$m" || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$dir"/*.out; do echo "--- $f"; tail -n 40 "$f"; done; exit 1; }
json() { python3 -c "import json,sys; r=json.load(open('$1')); $2"; }

"$vmpod" cluster --dir "$cluster_dir" --pod-capacity 3G >"$dir/cluster.out" 2>&1 &
cluster_pid=$!
for _ in $(seq 1 300); do grep -q '^export VMPOD_VMM=' "$dir/cluster.out" && break; sleep 0.1; done
grep -q '^export VMPOD_VMM=' "$dir/cluster.out" || fail "the cluster did not start"

mkdir -p "$dir/code"
cat >"$dir/code/test.sh" <<'EOF'
#!/bin/sh
# test.sh STRESSOR RUN: one stressor, a fixed number of bogo operations.
echo "code-version 1 run $2 on $(hostname)"
exec stress-ng --"$1" 1 --"$1"-ops 50 --vm-bytes 16M --metrics-brief
EOF
base_plan() {  # NAME CLONES ITERATIONS COMMAND [SEED]
  cat <<EOF
name = "$1"
[guest]
memory = "256M"
[base]
setup = "stress-ng --version > /run/stress-ng-version"
ready = "test -s /run/stress-ng-version"
[code]
dir = "code"
[test]
command = "$4"
clones = $2
iterations = $3
parallel = 8
time_limit = "120s"
seed = ${5:-1}
EOF
}
{ base_plan stress-ng 4 3 'sh {code}/test.sh {stressor} {run}'; printf '[test.sweep]\nstressor = ["vm", "cpu"]\n'; } \
  >"$dir/stress-ng.toml"

# ---- 1. 8 clones x 3 iterations ------------------------------------------------
# The documented example loads and expands to its 24 runs, each with its seed.
example=$(dirname "$0")/../../docs/examples/stress-ng.toml
"$vmpod" stress "$example" --list >"$dir/list.out" 2>&1 || fail "the example plan does not load"
grep -qx "24 runs, 2 at a time" "$dir/list.out" && grep -q "^r0024 .*stressor=cpu seed [0-9]" "$dir/list.out" \
  || fail "the example plan's runs: $(tail -n 3 "$dir/list.out")"
"$vmpod" stress "$dir/stress-ng.toml" --state-dir "$state" --report "$dir/r1.json" --junit "$dir/r1.xml" \
  >"$dir/r1.out" 2>&1 || fail "the stress-ng plan did not pass"
json "$dir/r1.json" '
runs = r["runs"]
assert len(runs) == 24, len(runs)
assert all(x["verdict"] == "passed" for x in runs), [x["reason"] for x in runs]
assert not r["base-reused"], "a fresh cluster cannot have the base"
assert sorted(x["iteration"] for x in runs) == sorted([0, 1, 2] * 8)
for stressor in ("vm", "cpu"):
    mine = [x for x in runs if x["params"]["stressor"] == stressor]
    assert len(mine) == 12, (stressor, len(mine))
    for x in mine:
        out = x["output"]
        assert "code-version 1 run %s on %s" % (x["id"], x["clone"]) in out, out
        assert "successful run completed" in out, out
        # The metrics line: stressor name, then its bogo ops; the cpu stressor
        # stops at the first check after 50 operations, so it may do a few more.
        ops = [int(l.split()[4]) for l in out.splitlines() if "] %s " % stressor in l and "metrc" in l]
        assert len(ops) == 1 and 50 <= ops[0] <= 64, (ops, out)
assert len({x["clone"] for x in runs}) == 24, "every run had a clone of its own"
assert all(x["first-instruction-ms"] > 0 and x["bytes-fetched"] > 0 for x in runs), "every clone reads its memory from the pods"
assert len({x["seed"] for x in runs}) == 24
print("stress_cli: 24 runs passed; fork to first instruction p50 %.0f ms" %
      sorted(x["first-instruction-ms"] for x in runs)[12])
' || fail "report 1 does not match what the guests did"
grep -c '<testcase ' "$dir/r1.xml" | grep -qx 24 || fail "the JUnit report does not have 24 test cases"
grep -q "24 runs: 24 passed" "$dir/r1.out" || fail "no summary line"
base=$(json "$dir/r1.json" 'print(r["base-snapshot"])')

# ---- 2. new code, same base ---------------------------------------------------
sed -i 's/code-version 1/code-version 2/' "$dir/code/test.sh"
base_plan stress-ng-again 2 1 'sh {code}/test.sh cpu {run}' >"$dir/again.toml"
"$vmpod" stress "$dir/again.toml" --state-dir "$state" --report "$dir/r2.json" >"$dir/r2.out" 2>&1 \
  || fail "the second plan did not pass"
json "$dir/r2.json" "
assert r['base-reused'] and r['base-snapshot'] == '$base', (r['base-reused'], r['base-snapshot'])
assert r['base-ms'] == 0
assert len(r['runs']) == 2
assert all('code-version 2 run ' in x['output'] and 'code-version 1' not in x['output'] for x in r['runs'])
" || fail "the second invocation did not run the new code on the same base"
[ "$("$vmpod" snapshots --json 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["name"].startswith("stress-")))')" = 1 ] \
  || fail "more than one base snapshot"

# ---- 3. failing one run in three by its seed ------------------------------------
cat >"$dir/code/flaky.sh" <<'EOF'
#!/bin/sh
# flaky.sh SEED: fails when SEED is a multiple of 3 (its digit sum is).
sum=0
for d in $(echo "$1" | sed 's/./& /g'); do sum=$((sum + d)); done
echo "flaky: seed $1"
if [ $((sum % 3)) -eq 0 ]; then echo "FLAKY-FAILURE seed $1" > /dev/console; exit 1; fi
EOF
base_plan flaky 9 1 'sh {code}/flaky.sh {seed}' 7 >"$dir/flaky.toml"
set +e
"$vmpod" stress "$dir/flaky.toml" --state-dir "$state" --report "$dir/r3.json" >"$dir/r3.out" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "a plan with failing runs exited $rc, not 1"
failed=$(json "$dir/r3.json" '
runs = r["runs"]
assert len(runs) == 9
expected = {x["id"] for x in runs if x["seed"] % 3 == 0}
got = {x["id"] for x in runs if x["verdict"] != "passed"}
assert got == expected, (got, expected)
assert 0 < len(got) < 9, "the plan seed should give both outcomes"
for x in runs:
    if x["id"] in got:
        assert x["reason"] == "exit code 1", x["reason"]
        assert "FLAKY-FAILURE seed %d" % x["seed"] in x["console"], x["console"][-500:]
        assert x["failure-snapshot"] == r["runs"][0]["clone"].split("-r")[0] + "-" + x["id"]
print(sorted(got)[0])
') || fail "the failing runs are not those whose seed is a multiple of 3"
session=$(json "$dir/r3.json" 'print(r["runs"][0]["clone"].split("-r")[0])')
run_id=$session-$failed
grep -q "$run_id" "$dir/r3.out" || fail "the summary does not name $run_id"

"$vmpod" stress replay "$run_id" --state-dir "$state" >"$dir/replay.out" 2>&1 || fail "replay failed"
replayed=$(awk '/replayed as/ {print $3}' "$dir/replay.out")
[ -n "$replayed" ] || fail "replay named no VM"
# The replayed clone is the failing one as it was: its host name, its console.
"$vmpod" exec "$replayed" 'hostname; cat /etc/machine-id' >"$dir/exec.out" 2>&1 || fail "exec in the replay"
grep -q "^$session-$failed-0\$" "$dir/exec.out" || fail "the replay is not the failing clone ($(cat "$dir/exec.out"))"
"$vmpod" stop "$replayed"
set +e
"$vmpod" stress replay "$run_id" --rerun --state-dir "$state" >"$dir/rerun.out" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] && grep -q "failed: exit code 1" "$dir/rerun.out" || fail "--rerun did not fail the same way (exit $rc)"

# ---- 4. Ctrl-C midway --------------------------------------------------------------
regions() {  # regions on the memory pods, seen through a fresh clone of the base
  local vm
  vm=$("$vmpod" fork "$base" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["name"])')
  "$vmpod" stats "$vm" | awk '/memory pod/ {for (i = 1; i <= NF; i++) if ($i == "regions") n += $(i - 1)} END {print n}'
  "$vmpod" stop "$vm"
}
live_vms() { "$vmpod" ls --json | python3 -c 'import json,sys; print(sum(1 for v in json.load(sys.stdin) if v["state"] not in ("stopped", "failed")))'; }
before=$(regions)
mounts_before=$(grep -c " $cluster_dir/" /proc/mounts || true)
base_plan slow 4 1 'sleep 100' >"$dir/slow.toml"
"$vmpod" stress "$dir/slow.toml" --state-dir "$state" >"$dir/slow.out" 2>&1 &
stress_pid=$!
for _ in $(seq 1 600); do [ "$(live_vms)" -ge 4 ] && break; sleep 0.2; done
[ "$(live_vms)" -ge 4 ] || fail "the slow plan did not start its clones"
sleep 2
kill -INT "$stress_pid"
set +e
wait "$stress_pid"
rc=$?
set -e
[ "$rc" -eq 130 ] || fail "an interrupted stress run exited $rc, not 130"
[ "$(live_vms)" -eq 0 ] || fail "clones left running: $("$vmpod" ls)"
pgrep -f -- "qemu-system.*$cluster_dir/" >/dev/null && fail "QEMU processes left behind"
[ "$(grep -c " $cluster_dir/" /proc/mounts || true)" -eq "$mounts_before" ] || fail "mounts left behind"
after=$(regions)
[ "$after" -eq "$before" ] || fail "regions on the memory pods: $before before the interrupted run, $after after"
echo "1 passed, 0 failed"
