#!/usr/bin/env bash
# Installs the Debian 12 packages berth needs to build, test and benchmark.
# Idempotent: fast when everything is there already.
set -euo pipefail

pkgs=(
  build-essential cmake ninja-build pkg-config ccache mold git
  libseccomp-dev nlohmann-json3-dev rapidjson-dev libgtest-dev libgmock-dev
  libcli11-dev libssl-dev libarchive-dev libzstd-dev libisal-dev libcurl4-openssl-dev libsqlite3-dev
  busybox-static jq python3 procps iproute2
  runc hyperfine pigz isal
  docker-registry apache2-utils openssl skopeo umoci podman debootstrap
  qemu-system-x86 linux-image-amd64 cpio
  clang-16 libclang-rt-16-dev
  systemd dbus-daemon util-linux
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $EUID -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
