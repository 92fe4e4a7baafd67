#!/bin/sh
# Installs the Debian 12 packages that building and testing ustack need, when missing.
# Run as root (CI is); otherwise it only says what is missing.
set -eu
PKGS="build-essential clang llvm libclang-rt-14-dev clang-format pkg-config check libsubunit-dev
      libdpdk-dev dpdk-dev liburcu-dev libnuma-dev git
      iproute2 ethtool iputils-ping socat netcat-openbsd procps coreutils diffutils
      nginx-light apache2-utils curl python3 wrk hping3 python3-scapy tcpdump
      gnuplot-nox valgrind shellcheck dnsmasq-base bind9-dnsutils redis-server redis-tools iperf3 memcached
      nodejs openssl wget"
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
# Debian's nginx and redis must never start (or stay) as services on the host: the tests
# run their own. A policy-rc.d refusing every service start is in place during the install
# (unless the machine already has one), and on systemd hosts a freshly installed nginx unit
# is also stopped and disabled.
had_nginx=1 had_redis=1 had_memcached=1
case "$missing " in *" nginx-light "*) had_nginx=0 ;; esac
case "$missing " in *" redis-server "*) had_redis=0 ;; esac
case "$missing " in *" memcached "*) had_memcached=0 ;; esac
policy_made=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# tools/deps.sh: no service starts while it installs packages\nexit 101\n' \
        >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy_made=1
fi
trap 'if [ "$policy_made" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
trap 'exit 130' INT TERM
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if [ "$had_nginx" = 0 ]; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
    if [ "$had_redis" = 0 ]; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
    if [ "$had_memcached" = 0 ]; then systemctl disable --now memcached >/dev/null 2>&1 || true; fi
fi
