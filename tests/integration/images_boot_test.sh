#!/bin/bash
# Boot the vmpod guest image with plain QEMU and check it works.
#
# usage: images_boot_test.sh [KERNEL INITRD]
#   Without arguments the image is built (images/build-image.sh) into
#   ${VMPOD_IMAGE_DIR:-/tmp/vmpod-guest-image}.
# Environment: VMPOD_TEST_ACCEL (default tcg), VMPOD_TEST_MACHINE (q35 or
#   microvm, default q35), VMPOD_TEST_TIMEOUT (seconds per boot, default 90).
#
# Checks: VMPOD-READY on the serial console; an agent round trip over the
# virtio-serial port (ping, `echo hi; exit 3`); vmpod-memcheck 64 MiB; a short
# stress-ng run; a vmpod.cmd boot that prints VMPOD-EXIT and powers off.
# Every QEMU started here is killed on exit, whatever happens; each also runs
# under `timeout`, so it dies even if this script is killed with SIGKILL.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ACCEL=${VMPOD_TEST_ACCEL:-tcg}
MACHINE=${VMPOD_TEST_MACHINE:-q35}
BOOT_TIMEOUT=${VMPOD_TEST_TIMEOUT:-90}

fail() { echo "FAIL: $*" >&2; exit 1; }
info() { echo "images_boot_test: $*" >&2; }

if [ $# -ge 2 ]; then
    KERNEL=$1
    INITRD=$2
elif [ $# -eq 0 ]; then
    dir=${VMPOD_IMAGE_DIR:-/tmp/vmpod-guest-image}
    "$REPO/images/build-image.sh" "$dir" || fail "image build failed"
    KERNEL=$dir/vmlinuz
    INITRD=$dir/initramfs.cpio.gz
else
    echo "usage: $0 [KERNEL INITRD]" >&2
    exit 2
fi
[ -s "$KERNEL" ] || fail "kernel $KERNEL missing"
[ -s "$INITRD" ] || fail "initrd $INITRD missing"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 not found"
command -v python3 >/dev/null || fail "python3 not found"

T=$(mktemp -d /tmp/vmpod-imgtest.XXXXXX)
QEMU_PIDS=()
cleanup() {
    local pid i
    for pid in "${QEMU_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || continue
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_LOGS:-0}" = 1 ]; then
        info "logs kept in $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BASE_APPEND="console=ttyS0 panic=-1 quiet mitigations=off cryptomgr.notests"
case "$MACHINE" in
    q35) MACH=(-M q35) VSERIAL=virtio-serial-pci ;;
    microvm)
        khz=$(awk '/^cpu MHz/ { printf "%d", $4 * 1000; exit }' /proc/cpuinfo)
        MACH=(-M microvm) VSERIAL=virtio-serial-device
        BASE_APPEND="$BASE_APPEND tsc_early_khz=$khz" ;;
    *) fail "unknown machine $MACHINE" ;;
esac

# start_qemu NAME APPEND...: boots in the background; serial console to
# $T/NAME.log, agent socket $T/NAME.sock; sets QEMU_PID.
start_qemu() {
    local name=$1
    shift
    timeout --kill-after=5 "$BOOT_TIMEOUT" \
        qemu-system-x86_64 "${MACH[@]}" -accel "$ACCEL" -cpu max -m 256 \
        -nodefaults -no-user-config -display none -monitor none -no-reboot \
        -serial "file:$T/$name.log" \
        -kernel "$KERNEL" -initrd "$INITRD" -append "$BASE_APPEND $*" \
        -device "$VSERIAL" \
        -chardev "socket,id=agent,path=$T/$name.sock,server=on,wait=off" \
        -device virtserialport,chardev=agent,name=org.vmpod.agent \
        >"$T/$name.qemu.log" 2>&1 &
    QEMU_PID=$!
    QEMU_PIDS+=("$QEMU_PID")
}

# wait_for NAME PATTERN SECONDS: waits until the console log has PATTERN.
wait_for() {
    local name=$1 pattern=$2 secs=$3 start=$SECONDS
    while ! grep -aq -- "$pattern" "$T/$name.log" 2>/dev/null; do
        if ! kill -0 "$QEMU_PID" 2>/dev/null; then
            tail -c 2000 "$T/$name.log" >&2 2>/dev/null || true
            cat "$T/$name.qemu.log" >&2 2>/dev/null || true
            fail "$name: QEMU exited before '$pattern'"
        fi
        if [ $((SECONDS - start)) -ge "$secs" ]; then
            tail -c 2000 "$T/$name.log" >&2 2>/dev/null || true
            fail "$name: no '$pattern' on the console after ${secs}s"
        fi
        sleep 0.1
    done
}

# ---- 1. boot, agent round trip, memcheck, stress-ng ---------------------------
t0=$(date +%s.%N)
start_qemu main
wait_for main '^VMPOD-READY' "$BOOT_TIMEOUT"
t1=$(date +%s.%N)
info "VMPOD-READY after $(echo "$t1 - $t0" | bc 2>/dev/null || awk "BEGIN{print $t1-$t0}") s ($MACHINE, $ACCEL)"

python3 - "$T/main.sock" <<'EOF' || fail "agent checks failed (see above)"
import base64, socket, sys, time

sock = socket.socket(socket.AF_UNIX)
sock.settimeout(60)
sock.connect(sys.argv[1])
f = sock.makefile("rwb")

def send(line):
    f.write((line + "\n").encode())
    f.flush()

def recv():
    line = f.readline()
    if not line:
        raise SystemExit("FAIL: agent closed the connection")
    return line.decode().rstrip("\n")

def run(cid, cmd):
    send("run %s %s" % (cid, base64.b64encode(cmd.encode()).decode()))
    out = None
    started = False
    while True:
        parts = recv().split(" ")
        if parts[0] == "started" and parts[1] == cid:
            started = True
        elif parts[0] == "output" and parts[1] == cid:
            out = b"" if parts[2] == "-" else base64.b64decode(parts[2])
        elif parts[0] == "exit" and parts[1] == cid:
            if not started:
                raise SystemExit("FAIL: no 'started %s' before its exit" % cid)
            return out.decode(errors="replace"), int(parts[2])
        elif parts[0] == "error":
            raise SystemExit("FAIL: agent error: " + " ".join(parts))

t = time.time()
send("ping sync")
while recv() != "pong sync":
    pass
print("images_boot_test: agent ping %.1f ms" % ((time.time() - t) * 1000), file=sys.stderr)

out, code = run("hi", "echo hi; exit 3")
if out != "hi\n" or code != 3:
    raise SystemExit("FAIL: 'echo hi; exit 3' gave %r, exit %d" % (out, code))

out, code = run("mem", "vmpod-memcheck --size-mib 64 --seed 7")
if code != 0 or "MEMCHECK verified ok" not in out:
    raise SystemExit("FAIL: memcheck exit %d:\n%s" % (code, out))
print("images_boot_test: " + out.strip().replace("\n", " | "), file=sys.stderr)

out, code = run("stress", "stress-ng --vm 1 --vm-bytes 16M --timeout 1s")
if code != 0:
    raise SystemExit("FAIL: stress-ng exit %d:\n%s" % (code, out))
EOF

# ---- 2. vmpod.cmd with poweroff ---------------------------------------------------
cmd=$(printf 'echo cmd-ran; exit 5' | base64 -w0)
start_qemu cmd "vmpod.cmd=$cmd vmpod.poweroff=1 vmpod.agent=0"
wait_for cmd '^VMPOD-EXIT 5' "$BOOT_TIMEOUT"
grep -aq '^cmd-ran' "$T/cmd.log" || fail "vmpod.cmd output missing from the console"
for _ in $(seq 1 100); do
    kill -0 "$QEMU_PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$QEMU_PID" 2>/dev/null && fail "guest did not power off after vmpod.cmd"

echo "PASS: images_boot_test ($MACHINE, $ACCEL)"
