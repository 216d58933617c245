#!/bin/bash
# Build the vmpod guest image from Debian packages:
#   OUTDIR/vmlinuz            Debian 12 kernel (bzImage, from linux-image-6.1.0-*-amd64)
#   OUTDIR/vmlinux            the same kernel uncompressed (ELF with a PVH entry:
#                             QEMU -kernel boots it without decompressing, faster)
#   OUTDIR/initramfs.cpio.gz  busybox, /init, vmpod-agent, vmpod-memcheck, virtio
#                             modules, stress-ng (in a squashfs mounted on first use)
# See images/README.md.
#
# usage: images/build-image.sh OUTDIR
#
# The result is cached: the key is the kernel package and version, the versions
# of busybox-static and stress-ng, and a hash of the image sources. When the key
# is unchanged the script returns at once without touching OUTDIR; a build with
# the same key made for another OUTDIR is copied from the cache.
# Environment:
#   VMPOD_IMAGE_CACHE    cache dir for kernel packages and built images
#                        (default ~/.cache/vmpod/images)
#   VMPOD_IMAGE_FORCE=1  rebuild even when the key matches
#   VMPOD_SQUASHFS_COMP  compressor of the stress-ng squashfs (default zstd)
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUTDIR=$1
SRCDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${VMPOD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmpod/images}
SQUASHFS_COMP=${VMPOD_SQUASHFS_COMP:-zstd}
SOURCES=(build-image.sh init agent.c memcheck.c stress-ng-wrapper)

mkdir -p "$OUTDIR" "$CACHE"
OUTDIR=$(cd "$OUTDIR" && pwd)

log() { echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

# One build per OUTDIR at a time.
exec 9>"$OUTDIR/.build-image.lock"
flock 9

# ---- host packages ----------------------------------------------------------
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" in
            ii*) ;;
            *) missing+=("$p") ;;
        esac
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing missing packages: ${missing[*]}"
        if [ "$(id -u)" -ne 0 ]; then
            die "packages missing and not root: apt-get install -y ${missing[*]}"
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}
ensure_packages busybox-static stress-ng cpio gzip xz-utils squashfs-tools gcc libc6-dev kmod util-linux

# ---- kernel package -----------------------------------------------------------
# Resolving linux-image-amd64 with apt-cache takes ~1 s here (no pkgcache), so
# the answer is remembered against a fingerprint of the apt lists.
apt_fingerprint() {
    {
        stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null || true
        stat -c '%n %Y' /etc/apt /etc/apt/preferences.d /etc/apt/sources.list.d 2>/dev/null || true
    } | sha256sum | cut -c1-32
}
resolve_kernel() {
    local fp resolved pkg= ver= tmp
    fp=$(apt_fingerprint)
    resolved="$CACHE/kernel-resolved"
    if [ -f "$resolved" ] && [ "$(sed -n 1p "$resolved")" = "$fp" ]; then
        KPKG=$(sed -n 2p "$resolved")
        KVERSION=$(sed -n 3p "$resolved")
        return
    fi
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n 1)
    [ -n "$pkg" ] && ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null |
                           sed -n 's/^Version: //p' | head -n 1)
    if [ -z "$pkg" ] || [ -z "${ver:-}" ]; then
        # No usable apt lists: fall back to the last resolution, if any.
        if [ -f "$resolved" ]; then
            KPKG=$(sed -n 2p "$resolved")
            KVERSION=$(sed -n 3p "$resolved")
            log "warning: apt-cache cannot resolve linux-image-amd64; using $KPKG $KVERSION"
            return
        fi
        die "cannot resolve linux-image-amd64 to linux-image-6.1.0-*-amd64 (apt-get update?)"
    fi
    tmp=$(mktemp "$resolved.XXXXXX")
    printf '%s\n%s\n%s\n' "$fp" "$pkg" "$ver" >"$tmp"
    mv -f "$tmp" "$resolved"
    KPKG=$pkg
    KVERSION=$ver
}
resolve_kernel

# ---- cache key ------------------------------------------------------------------
KEY=$( {
    echo "kernel $KPKG $KVERSION squashfs $SQUASHFS_COMP"
    dpkg-query -W -f='${Package} ${Version}\n' busybox-static stress-ng libc6 gcc squashfs-tools
    for f in "${SOURCES[@]}"; do
        echo "== $f"
        cat "$SRCDIR/$f"
    done
} | sha256sum | cut -c1-64)

STAMP="$OUTDIR/.guest-image.stamp"
if [ "${VMPOD_IMAGE_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] &&
   [ -s "$OUTDIR/vmlinuz" ] && [ -s "$OUTDIR/vmlinux" ] && [ -s "$OUTDIR/initramfs.cpio.gz" ]; then
    exit 0
fi
OUTPUTS=(vmlinuz vmlinux initramfs.cpio.gz)
WORK=$(mktemp -d "$OUTDIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Publish WORK/{vmlinuz,vmlinux,initramfs.cpio.gz} into OUTDIR: each file is
# renamed into place (atomic per file), the stamp is removed first and written
# last, so a stamp always describes the files next to it.
publish() {
    local f
    rm -f "$STAMP"
    for f in initramfs.cpio.gz vmlinux vmlinuz; do
        mv -f "$WORK/$f" "$OUTDIR/$f"
    done
    echo "$KEY" >"$WORK/stamp"
    mv -f "$WORK/stamp" "$STAMP"
}

# A build with the same key made for another OUTDIR is reused.
BUILT="$CACHE/built"
if [ "${VMPOD_IMAGE_FORCE:-0}" != 1 ] && [ -f "$BUILT/$KEY/complete" ]; then
    for f in "${OUTPUTS[@]}"; do cp "$BUILT/$KEY/$f" "$WORK/$f"; done
    publish
    log "reused cached image $KEY"
    exit 0
fi
log "building guest image ($KPKG $KVERSION) in $OUTDIR"

# ---- fetch and unpack the kernel (never installed on the host) -------------------
DEB="$CACHE/${KPKG}_${KVERSION//:/%3a}_amd64.deb"
if [ ! -s "$DEB" ]; then
    log "downloading $KPKG=$KVERSION"
    (cd "$WORK" && apt-get download "$KPKG=$KVERSION" >&2 2>/dev/null) ||
        (cd "$WORK" && apt-get download "$KPKG=$KVERSION" >&2) ||
        die "apt-get download $KPKG=$KVERSION failed"
    mv -f "$WORK"/"$KPKG"_*.deb "$DEB"
fi
KX="$WORK/kernel"
mkdir -p "$KX"
dpkg-deb --fsys-tarfile "$DEB" |
    tar -x -C "$KX" --wildcards './boot/vmlinuz-*' \
        './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/char/*' \
        './lib/modules/*/kernel/drivers/block/virtio_blk.ko' \
        './lib/modules/*/kernel/drivers/block/loop.ko' './lib/modules/*/kernel/fs/squashfs/squashfs.ko' \
        './lib/modules/*/kernel/drivers/net/virtio_net.ko' \
        './lib/modules/*/kernel/drivers/net/net_failover.ko' \
        './lib/modules/*/kernel/net/core/failover.ko' \
        './lib/modules/*/modules.builtin' './lib/modules/*/modules.builtin.modinfo' \
        './lib/modules/*/modules.order'
VMLINUZ=$(ls "$KX"/boot/vmlinuz-* | head -n 1)
KVER=${VMLINUZ##*/vmlinuz-}
[ -d "$KX/lib/modules/$KVER" ] || die "no modules for $KVER in $DEB"

# Uncompressed kernel (ELF with a PVH entry note): find the xz stream in the
# bzImage (Debian compresses with xz) and unpack it.
extract_vmlinux() {
    local img=$1 out=$2 off
    for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$img" | cut -d: -f1); do
        # (tail gets SIGPIPE when xz stops at the end of the stream: judge
        # by the result, not the pipeline status)
        { tail -c +$((off + 1)) "$img" | xz -dc --single-stream >"$out" 2>/dev/null; } || true
        if [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
            return 0
        fi
    done
    return 1
}
extract_vmlinux "$VMLINUZ" "$WORK/vmlinux" || die "cannot extract vmlinux from $VMLINUZ"

# ---- guest programs -----------------------------------------------------------------
CFLAGS=(-static -O2 -Wall -Wextra -s)
gcc "${CFLAGS[@]}" -o "$WORK/vmpod-agent" "$SRCDIR/agent.c"
gcc "${CFLAGS[@]}" -o "$WORK/vmpod-memcheck" "$SRCDIR/memcheck.c"

# ---- initramfs tree -----------------------------------------------------------------
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,tmp,run,root,mnt,var/log}
chmod 1777 "$R/tmp"
ln -s ../run "$R/var/run"

ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static (install busybox-static)"
cp /bin/busybox "$R/bin/busybox"
busybox --list-full | while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    dir=${applet%/*}
    rel=$(echo "$dir" | sed 's,[^/]*,..,g')
    mkdir -p "$R/$dir"
    ln -sf "$rel/bin/busybox" "$R/$applet"
done
# The applet list has no bin/sh link on some configs: make sure.
[ -e "$R/bin/sh" ] || ln -s busybox "$R/bin/sh"

install -m 0755 "$SRCDIR/init" "$R/init"
install -m 0755 "$WORK/vmpod-agent" "$R/bin/vmpod-agent"
install -m 0755 "$WORK/vmpod-memcheck" "$R/bin/vmpod-memcheck"

# stress-ng and the shared libraries it needs (33 MB) go in a squashfs image
# that the /usr/bin/stress-ng wrapper loop-mounts on /opt/stress-ng on first
# use: the kernel then decompresses only the pages stress-ng touches, instead
# of unpacking 33 MB at every boot (about a second under TCG).
# /lib64/ld-linux-x86-64.so.2 and /lib/x86_64-linux-gnu point into the mount.
S="$WORK/stress"
mkdir -p "$S/bin" "$S/lib"
install -m 0755 /usr/bin/stress-ng "$S/bin/stress-ng"
ldd /usr/bin/stress-ng | awk '/=> \//{print $3} /^\t\/[^ ]*ld-linux/{print $1}' | sort -u |
while read -r lib; do
    cp -L "$lib" "$S/lib/${lib##*/}"
done
[ -e "$S/lib/ld-linux-x86-64.so.2" ] || die "dynamic loader not found by ldd"
mkdir -p "$R/usr/lib/vmpod" "$R/opt/stress-ng"
mksquashfs "$S" "$R/usr/lib/vmpod/stress-ng.sqfs" -comp "$SQUASHFS_COMP" -noappend \
    -all-root -no-xattrs -quiet -no-progress -mkfs-time 0 -all-time 0 >/dev/null
ln -s /opt/stress-ng/lib/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
ln -s /opt/stress-ng/lib "$R/lib/x86_64-linux-gnu"
install -m 0755 "$SRCDIR/stress-ng-wrapper" "$R/usr/bin/stress-ng"

# Kernel modules (virtio transports, console, blk, net, balloon, mem, rng) and
# a modules.dep so that busybox modprobe works.
MODS=(drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko
      drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko
      drivers/virtio/virtio_pci.ko drivers/virtio/virtio_mmio.ko
      drivers/virtio/virtio_balloon.ko drivers/virtio/virtio_mem.ko
      drivers/char/virtio_console.ko drivers/char/hw_random/virtio-rng.ko
      drivers/block/virtio_blk.ko drivers/net/virtio_net.ko
      drivers/net/net_failover.ko net/core/failover.ko
      drivers/block/loop.ko fs/squashfs/squashfs.ko)
MD="$R/lib/modules/$KVER"
for m in "${MODS[@]}"; do
    src="$KX/lib/modules/$KVER/kernel/$m"
    [ -f "$src" ] || { log "note: module $m not in package (built in?)"; continue; }
    mkdir -p "$MD/kernel/${m%/*}"
    cp "$src" "$MD/kernel/$m"
done
cp "$KX/lib/modules/$KVER"/modules.builtin* "$KX/lib/modules/$KVER/modules.order" "$MD/"
depmod -b "$R" "$KVER" 2>/dev/null || log "note: depmod failed; modprobe will not work in the guest"

cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
tty:x:5:
EOF
echo vmpod >"$R/etc/hostname"
printf 'vmpod guest image\nkernel %s %s\nkey %s\n' "$KPKG" "$KVERSION" "$KEY" >"$R/etc/vmpod-image"

# ---- cpio ---------------------------------------------------------------------------
# A second tiny archive carries /dev/console and /dev/null (device nodes need
# root to create; the kernel needs /dev/console before /init runs). newc format,
# written by hand so the build does not need root.
newc_entry() {  # name mode major minor
    local name=$1 mode=$2 maj=$3 min=$4 namesize hdr pad
    namesize=$(( ${#name} + 1 ))
    hdr=$(printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$5" "$mode" 0 0 1 0 0 0 0 "$maj" "$min" "$namesize" 0)
    printf '%s%s\0' "$hdr" "$name"
    pad=$(( (4 - (110 + namesize) % 4) % 4 ))
    head -c "$pad" /dev/zero
}
{
    newc_entry dev $((0040755)) 0 0 1
    newc_entry dev/console $((0020600)) 5 1 2
    newc_entry dev/null $((0020666)) 1 3 3
    newc_entry TRAILER!!! 0 0 0 0
} >"$WORK/dev.cpio"

(cd "$R" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$WORK/root.cpio"
cat "$WORK/dev.cpio" "$WORK/root.cpio" | gzip -n -6 >"$WORK/initramfs.cpio.gz"

# ---- publish, and keep a copy for other build dirs (the two newest keys) ------
cp "$VMLINUZ" "$WORK/vmlinuz"
mkdir -p "$BUILT"
if C=$(mktemp -d "$BUILT/.new.XXXXXX"); then
    for f in "${OUTPUTS[@]}"; do cp "$WORK/$f" "$C/$f"; done
    touch "$C/complete"
    chmod 755 "$C"
    mv -T "$C" "$BUILT/$KEY" 2>/dev/null || rm -rf "$C"  # (another build won)
    ls -1t "$BUILT" | tail -n +3 | while read -r old; do rm -rf "${BUILT:?}/$old"; done
fi
publish
log "done: $(du -h "$OUTDIR/vmlinuz" | cut -f1) vmlinuz, $(du -h "$OUTDIR/initramfs.cpio.gz" | cut -f1) initramfs ($KVER)"
