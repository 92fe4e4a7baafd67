#!/bin/sh
# Installs the Debian 12 packages that building and testing ustack need, when missing.
# Run as root (CI is); otherwise it only says what is missing.
set -eu
PKGS="build-essential clang llvm libclang-rt-14-dev clang-format pkg-config check libsubunit-dev
      libdpdk-dev dpdk-dev liburcu-dev libnuma-dev git
      iproute2 ethtool iputils-ping socat netcat-openbsd procps coreutils diffutils"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "ustack: missing Debian packages:$missing (run as root to install them)" >&2
    exit 1
fi
echo "ustack: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
