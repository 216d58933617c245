#!/usr/bin/env bash
# Installs every Debian 12 package vmpod's build, tests and guest image need.
# Idempotent: when everything is there it changes nothing and asks no mirror.
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config g++ python3
  libfabric-dev libfabric-bin libfuse3-dev fuse3 protobuf-c-compiler libprotobuf-c-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev libexpected-dev libcriterion-dev
  # fuzzing with libFuzzer, sanitizer runtime
  clang libclang-rt-14-dev
  # guests
  qemu-system-x86 qemu-utils
  # libvirt's QEMU driver with RAM on podfs (vmpod libvirt, its integration test)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev libxml2-dev
  # the guest image (images/build-image.sh)
  busybox-static stress-ng cpio gzip zstd kmod squashfs-tools
  # stress plans (TOML)
  libtomlplusplus-dev
)

# podfs ends a FUSE connection nobody will let go of through fusectl.
if [ "$(id -u)" -eq 0 ] && [ -d /sys/fs/fuse/connections ] && ! grep -q " /sys/fs/fuse/connections " /proc/mounts; then
  mount -t fusectl fusectl /sys/fs/fuse/connections || echo "setup: cannot mount fusectl" >&2
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing ${missing[*]}; run as root (sudo $0)" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
