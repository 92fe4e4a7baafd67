#!/bin/bash
# bench/demo.sh - the ustack demo (`make demo`): stock Debian nginx on ustack against the
# same nginx on the kernel's TCP, driven by stock ab, with the ratio.
#
#   netns C (client, kernel TCP)                 netns S (server side)
#   veth udc 198.18.70.1/24            <---->    veth uds: either
#   ab, curl                                       ustack run: no kernel address; nginx under
#                                                    LD_PRELOAD=libustack.so, whose ustackd
#                                                    owns 198.18.70.2 through net_af_xdp
#                                                  kernel run: 198.18.70.2/24 on uds, the
#                                                    same nginx without LD_PRELOAD
#
# nginx: the Debian binary, master as root, one worker as nobody, sendfile on, the config
# from bench/nginx/nginx.conf.in in a private prefix. Per round: ustack, then kernel; each
# with a fresh nginx: a byte-exact fetch of 1mb.bin (sha256), then ab without keep-alive,
# then ab -k, against http://198.18.70.2/index.html from C. The table shows the median over
# rounds and the ratio ustack/kernel; bench/results/<date>-<host>-demo.json keeps every run.
#
# Usage (root): bench/demo.sh [--quick] [--requests N] [--concurrency C] [--rounds N]
#                             [--cores LIST] [--daemon] [--kernel-only | --ustack-only]
#                             [--timeout S] [--out FILE] [--keep] [--no-install]
#   --quick             -n 10000 -c 100 (default -n 100000 -c 1000)
#   --requests N        ab -n (requests per ab run)
#   --concurrency C     ab -c
#   --rounds N          ustack/kernel pairs (default 1)
#   --cores LIST        USTACK_CORES for the ustack run (default 1; 0 on a 1-CPU machine)
#   --daemon            nginx with `daemon on;` (default: `daemon off;`, in the background)
#   --kernel-only       only the kernel half; --ustack-only: only the ustack half
#   --timeout S         bound on each ab run (default 120 + N/250 s)
#   --out FILE          JSON output (default bench/results/<date>-<host>-demo.json)
#   --keep              keep the temp directory (nginx logs, ab output, ustackd log)
#   --no-install        do not apt-get install missing packages, fail instead
# Environment: DEMO_LIB, DEMO_STACKD (default build/libustack.so, build/ustackd). USTACK_*
# variables from the environment are passed to the ustack run (and shown) except the ones
# the demo sets itself.
# Exit status: 0 every run succeeded; 1 a run failed (ab error, failed or non-2xx requests,
# nginx not starting, sha256 mismatch); 2 libustack.so or ustackd missing or unusable (after
# the kernel half has run) or bad usage; 130 interrupted. The table of what completed is
# printed in every case.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=${DEMO_LIB:-$ROOT/build/libustack.so}
STACKD=${DEMO_STACKD:-$ROOT/build/ustackd}
TEMPLATE=$ROOT/bench/nginx/nginx.conf.in
INDEX=$ROOT/bench/nginx/index.html

REQS=100000 CONC=1000 ROUNDS=1 CORES="" DAEMON=off SIDES="ustack kernel" ABT="" OUT=""
KEEP=0 INSTALL=1
ARGS="$*"
usage() { sed -n '2,/^# printed in every case/s/^# \{0,1\}//p' "$0"; }
while [ $# -gt 0 ]; do
    case $1 in
        --quick) REQS=10000 CONC=100 ;;
        --requests) REQS=${2-}; shift ;;
        --concurrency) CONC=${2-}; shift ;;
        --rounds) ROUNDS=${2-}; shift ;;
        --cores) CORES=${2-}; shift ;;
        --daemon) DAEMON=on ;;
        --kernel-only) SIDES=kernel ;;
        --ustack-only) SIDES=ustack ;;
        --timeout) ABT=${2-}; shift ;;
        --out) OUT=${2-}; shift ;;
        --keep) KEEP=1 ;;
        --no-install) INSTALL=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
isnum() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -gt 0 ]; }
isnum "$REQS" || { echo "demo.sh: bad --requests '$REQS'" >&2; exit 2; }
isnum "$CONC" || { echo "demo.sh: bad --concurrency '$CONC'" >&2; exit 2; }
isnum "$ROUNDS" || { echo "demo.sh: bad --rounds '$ROUNDS'" >&2; exit 2; }
[ "$CONC" -le "$REQS" ] || { echo "demo.sh: --concurrency $CONC is above --requests $REQS" >&2; exit 2; }
[ "$CONC" -le 15000 ] || { echo "demo.sh: --concurrency above 15000 does not fit the 20000 open-file limit" >&2; exit 2; }
[ -n "$ABT" ] || ABT=$((120 + REQS / 250))
isnum "$ABT" || { echo "demo.sh: bad --timeout '$ABT'" >&2; exit 2; }
if [ -z "$CORES" ]; then
    if [ "$(nproc)" -gt 1 ]; then CORES=1; else CORES=0; fi
fi
case $CORES in *[!0-9,-]* | '') echo "demo.sh: bad --cores '$CORES'" >&2; exit 2 ;; esac

[ "$(id -u)" = 0 ] || { echo "demo.sh: must run as root (namespaces, veth, AF_XDP, nginx as root)" >&2; exit 2; }

NS_C="ustd-c-$$" NS_S="ustd-s-$$" V_C=udc V_S=uds
IP_C=198.18.70.1 IP_S=198.18.70.2
URL="http://$IP_S/index.html"
TMPD="" POLICY_MADE=0 NGX_LAUNCH="" NGX_MASTER="" AB_PID="" USTACKD_PIDS="" NS_MADE=0
FAILS=0 REPORTED=0 INTERRUPTED=0 LIB_PROBLEM="" CUR="" CUR_USTACKD=""

log() { printf '[demo] %s\n' "$*" >&2; }
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) [ZX] ' "/proc/$1/stat" 2>/dev/null; }
comm_of() { cat "/proc/$1/comm" 2>/dev/null; }

# ------------------------------------------------------------------ cleanup

# kill_bounded PID SIG SECS: send SIG, wait up to SECS for the process to go, then SIGKILL.
kill_bounded() {
    local pid=$1 sig=$2 secs=$3 i
    alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    return 1
}

# The ustackd processes in S (spawned by libustack.so, so no children of ours): remember them,
# all of this run in USTACKD_PIDS, those of the current nginx in CUR_USTACKD.
note_ustackd() {
    local p
    [ "$NS_MADE" = 1 ] || return 0
    for p in $(ip netns pids "$NS_S" 2>/dev/null); do
        [ "$(comm_of "$p")" = ustackd ] || continue
        case " $USTACKD_PIDS " in *" $p "*) ;; *) USTACKD_PIDS="$USTACKD_PIDS $p" ;; esac
        case " $CUR_USTACKD " in *" $p "*) ;; *) CUR_USTACKD="$CUR_USTACKD $p" ;; esac
    done
}

# shellcheck disable=SC2317  # called by the traps
cleanup() {
    local p ns
    trap '' INT TERM
    if [ -n "$AB_PID" ]; then
        kill -TERM "$AB_PID" 2>/dev/null  # timeout passes it on to ab
        wait "$AB_PID" 2>/dev/null
        AB_PID=""
    fi
    stop_nginx quiet
    note_ustackd
    if [ "$NS_MADE" = 1 ]; then
        # ustackd gets SIGTERM first (it closes its connections), then whatever still runs
        # in our own namespaces, all started by this run, gets SIGKILL.
        for p in $(ip netns pids "$NS_S" 2>/dev/null); do
            [ "$(comm_of "$p")" = ustackd ] && kill_bounded "$p" TERM 5
        done
        for ns in $NS_C $NS_S; do
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        done
        sleep 0.2
        for ns in $NS_C $NS_S; do ip netns del "$ns" 2>/dev/null; done
        NS_MADE=0
    fi
    # DPDK leaves its runtime directory (EAL file prefix ustack-<pid>) behind.
    for p in $USTACKD_PIDS; do alive "$p" || rm -rf "/var/run/dpdk/ustack-$p"; done
    if [ "$POLICY_MADE" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_MADE=0; fi
}

# shellcheck disable=SC2317
on_exit() {
    local rc=$?
    trap - EXIT
    cleanup
    if [ "$REPORTED" = 0 ] && [ -n "$TMPD" ] && { [ -s "$TMPD/results.tsv" ] || [ -s "$TMPD/sha.tsv" ]; }; then
        report || true
    fi
    if [ -n "$TMPD" ] && [ -d "$TMPD" ]; then
        if [ "$KEEP" = 1 ]; then log "kept $TMPD"; else rm -rf "$TMPD"; fi
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'INTERRUPTED=1; log "interrupted (SIGINT): cleaning up"; exit 130' INT
trap 'INTERRUPTED=1; log "interrupted (SIGTERM): cleaning up"; exit 130' TERM

# ------------------------------------------------------------------ packages

# Debian packages for the tools the demo runs, installed when missing. Debian's nginx must
# not start as a service on the host: a policy-rc.d refusing every start is in place during
# the install (unless the machine already has one), and on systemd hosts a freshly
# installed nginx unit is stopped and disabled.
install_packages() {
    local missing=() had_nginx=1
    command -v nginx >/dev/null 2>&1 || { missing+=(nginx); had_nginx=0; }
    command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v ethtool >/dev/null 2>&1 || missing+=(ethtool)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v timeout >/dev/null 2>&1 && command -v sha256sum >/dev/null 2>&1 || missing+=(coreutils)
    command -v mount >/dev/null 2>&1 || missing+=(mount)
    [ ${#missing[@]} = 0 ] && return 0
    if [ "$INSTALL" = 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing: ${missing[*]} (install these Debian packages, or run without --no-install on Debian)"
        exit 2
    fi
    log "installing ${missing[*]}"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# bench/demo.sh: no service starts while it installs packages\nexit 101\n' \
            >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && POLICY_MADE=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$TMPD/apt.log" 2>&1; then
        apt-get update -q >>"$TMPD/apt.log" 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$TMPD/apt.log" 2>&1 || {
            tail -n 15 "$TMPD/apt.log" >&2
            log "apt-get install ${missing[*]} failed"
            exit 2
        }
    fi
    if [ "$POLICY_MADE" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_MADE=0; fi
    if [ "$had_nginx" = 0 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now nginx >/dev/null 2>&1 && log "Debian's nginx service: stopped and disabled"
    fi
    local p
    p=$(cat /run/nginx.pid 2>/dev/null)
    if [ "$had_nginx" = 0 ] && [ -n "$p" ] && alive "$p" && [ "$(comm_of "$p")" = nginx ]; then
        log "stopping the nginx service the package started (pid $p)"
        kill_bounded "$p" QUIT 10
    fi
    for t in nginx ab ip ethtool curl timeout sha256sum; do
        command -v "$t" >/dev/null 2>&1 || { log "'$t' still missing after the install"; exit 2; }
    done
}

# ------------------------------------------------------------------ set-up
TMPD=$(mktemp -d /tmp/ustack-demo.XXXXXX) || exit 2
chmod 755 "$TMPD"
install_packages
for f in "$TEMPLATE" "$INDEX"; do [ -r "$f" ] || { log "$f missing"; exit 2; }; done

# libustack.so and ustackd: present, loadable. Private copies, so a rebuild during the run
# cannot mix versions between rounds.
case " $SIDES " in *" ustack "*)
    if [ ! -e "$LIB" ]; then
        LIB_PROBLEM="$LIB does not exist (make all builds it)"
    elif [ ! -x "$STACKD" ]; then
        LIB_PROBLEM="$STACKD does not exist (make all builds it)"
    elif ! out=$(USTACK=0 LD_PRELOAD=$LIB /bin/true 2>&1) || [ -n "$out" ]; then
        LIB_PROBLEM="$LIB does not load: $(printf '%s' "$out" | head -n 3 | tr '\n' ' ')"
    fi
    if [ -n "$LIB_PROBLEM" ]; then
        log "=================================================================="
        log "NO USTACK RUN: $LIB_PROBLEM"
        log "running the kernel half only; the exit status will be 2"
        log "=================================================================="
        SIDES=kernel
    else
        mkdir "$TMPD/bin" && cp "$LIB" "$TMPD/bin/libustack.so" && cp "$STACKD" "$TMPD/bin/ustackd" || exit 2
    fi
    ;;
esac
BINARIES=""
[ -d "$TMPD/bin" ] && BINARIES="libustack.so $(sha256sum <"$LIB" | cut -c1-12) ustackd $(sha256sum <"$STACKD" | cut -c1-12)"

NGINX=$(command -v nginx)
NGINX_VER=$("$NGINX" -v 2>&1 | sed 's|^nginx version: ||')
AB_VER=$(ab -V 2>&1 | sed -n 's/^This is ApacheBench, Version \([^ ]*\).*/\1/p')

# Environment for the ustack run: the demo's own settings plus any other USTACK_* the caller set.
U_ENV=("LD_PRELOAD=$TMPD/bin/libustack.so" "USTACK_STACKD=$TMPD/bin/ustackd"
    "USTACK_DEV=net_af_xdp0,iface=$V_S" "USTACK_IP=$IP_S/24" "USTACK_CORES=$CORES")
U_EXTRA=""
while IFS= read -r kv; do
    case ${kv%%=*} in
        USTACK_DEV | USTACK_IP | USTACK_CORES | USTACK_STACKD | USTACK_STACKD_LOG | USTACK_SHM_FD | \
            USTACK_PIPE_FD | USTACK_FDS) ;;
        *) U_ENV+=("$kv"); U_EXTRA="$U_EXTRA $kv" ;;
    esac
done < <(env | grep '^USTACK[A-Z0-9_]*=')
while IFS= read -r v; do unset "$v"; done < <(env | sed -n 's/^\(USTACK[A-Z0-9_]*\)=.*/\1/p')
[ -n "$U_EXTRA" ] && log "extra ustack settings from the environment:$U_EXTRA"

# nginx prefix: config, pages, logs; everything readable by the worker (nobody).
PREFIX=$TMPD/nginx
NGX_USER=nobody
NGX_GROUP=$(getent group nogroup >/dev/null && echo nogroup || echo nobody)
mkdir -p "$PREFIX/www" "$PREFIX/tmp" "$TMPD/runs"
cp "$INDEX" "$PREFIX/www/index.html"
head -c 1048576 /dev/urandom >"$PREFIX/www/1mb.bin"
SHA_1MB=$(sha256sum <"$PREFIX/www/1mb.bin" | cut -d' ' -f1)
SHA_INDEX=$(sha256sum <"$PREFIX/www/index.html" | cut -d' ' -f1)
NGX_CONFIGURE=$("$NGINX" -V 2>&1)
TEMP_PATHS=""
for m in client_body proxy fastcgi uwsgi scgi; do
    case $m in client_body) mod="" ;; *) mod=http_${m}_module ;; esac
    if [ -n "$mod" ] && grep -q -- "--without-$mod" <<<"$NGX_CONFIGURE"; then continue; fi
    TEMP_PATHS="$TEMP_PATHS    ${m}_temp_path $PREFIX/tmp/$m;\n"
done
sed -e "s|@USER@|$NGX_USER|; s|@GROUP@|$NGX_GROUP|; s|@DAEMON@|$DAEMON|; s|@PREFIX@|$PREFIX|g" \
    -e "s|@TEMP_PATHS@|$TEMP_PATHS|" "$TEMPLATE" >"$PREFIX/nginx.conf"
chmod -R a+rX "$TMPD"
# -e (nginx >= 1.19.5): errors before the configuration is read go to our log too.
NGX_ARGS=(-p "$PREFIX" -c "$PREFIX/nginx.conf")
"$NGINX" -h 2>&1 | grep -q -- '^ *-e ' && NGX_ARGS+=(-e "$PREFIX/error.log")
if ! out=$("$NGINX" -t "${NGX_ARGS[@]}" 2>&1); then
    printf '%s\n' "$out" >&2
    log "nginx -t refused the generated configuration ($PREFIX/nginx.conf)"
    exit 1
fi

# ------------------------------------------------------------------ topology
ip route show type blackhole 2>/dev/null | grep -q '198\.18\.0\.0/15' || ip route add blackhole 198.18.0.0/15
ip netns add "$NS_C" || exit 1
NS_MADE=1
ip netns add "$NS_S" || exit 1
ip -n "$NS_C" link add "$V_C" type veth peer name "$V_S" netns "$NS_S" || exit 1
for ns in "$NS_C" "$NS_S"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
    ip -n "$ns" link set lo up
done
# Frames of at most the MTU, with full checksums, for both servers.
ip netns exec "$NS_C" ethtool -K "$V_C" tx off rx off gso off gro off tso off >/dev/null 2>&1
ip netns exec "$NS_S" ethtool -K "$V_S" tx off rx off gso off gro off tso off >/dev/null 2>&1
# 100,000 connections from one client address: use the whole port range before reusing one.
ip netns exec "$NS_C" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" >/dev/null
ip -n "$NS_C" addr add "$IP_C/24" dev "$V_C" || exit 1
ip -n "$NS_C" link set "$V_C" up && ip -n "$NS_S" link set "$V_S" up || exit 1

# ------------------------------------------------------------------ nginx

# start_nginx SIDE DIR: a fresh nginx in S; 0 when it answers $URL from C (30 s bound).
start_nginx() {
    local side=$1 d=$2 i code
    ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
    ip -n "$NS_S" addr flush dev "$V_S"
    ip -n "$NS_C" neigh flush all; ip -n "$NS_S" neigh flush all
    rm -f "$PREFIX/nginx.pid"
    : >"$PREFIX/error.log"
    local -a cmd=("$NGINX" "${NGX_ARGS[@]}")
    if [ "$side" = ustack ]; then
        echo "ip netns exec S env ${U_ENV[*]} USTACK_STACKD_LOG=$d/ustackd.log ${cmd[*]}" >"$d/nginx.cmd"
        # `ip netns exec` gives a private /sys: mount a bpffs there for libxdp (ustackd,
        # spawned by the library, inherits it). sh and env exec, so $! is nginx itself.
        # shellcheck disable=SC2016
        ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null
            ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"' sh \
            "${U_ENV[@]}" "USTACK_STACKD_LOG=$d/ustackd.log" "${cmd[@]}" \
            >"$d/nginx.out" 2>"$d/nginx.err" </dev/null &
    else
        ip -n "$NS_S" addr add "$IP_S/24" dev "$V_S"
        echo "ip -n S addr add $IP_S/24 dev $V_S; ip netns exec S ${cmd[*]}" >"$d/nginx.cmd"
        # shellcheck disable=SC2016
        ip netns exec "$NS_S" sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
            "${cmd[@]}" >"$d/nginx.out" 2>"$d/nginx.err" </dev/null &
    fi
    NGX_LAUNCH=$!
    NGX_MASTER="" CUR_USTACKD=""
    for ((i = 0; i < 300; i++)); do
        note_ustackd
        if [ -z "$NGX_MASTER" ]; then
            local p
            p=$(cat "$PREFIX/nginx.pid" 2>/dev/null)
            [ -n "$p" ] && alive "$p" && NGX_MASTER=$p
        fi
        if [ -n "$NGX_MASTER" ]; then
            code=$(ip netns exec "$NS_C" curl -s -o "$d/index.got" -w '%{http_code}' --max-time 2 "$URL" 2>/dev/null)
            if [ "$code" = 200 ]; then
                note_ustackd
                if [ "$(sha256sum <"$d/index.got" | cut -d' ' -f1)" != "$SHA_INDEX" ]; then
                    echo "index.html fetched with curl differs from the original" >>"$d/fail"
                fi
                log "$side: nginx ready (master $NGX_MASTER$([ -n "$CUR_USTACKD" ] && [ "$side" = ustack ] && echo ", ustackd$CUR_USTACKD")) after $((i / 10)).$((i % 10)) s"
                return 0
            fi
            alive "$NGX_MASTER" || break
        elif ! alive "$NGX_LAUNCH"; then
            # daemon off: the launcher is the master. daemon on: it exits 0 once the
            # master runs (the pid file follows), or with an error.
            [ "$DAEMON" = off ] && break
            wait "$NGX_LAUNCH" 2>/dev/null || break
        fi
        sleep 0.1
    done
    if [ -n "$NGX_MASTER" ] && alive "$NGX_MASTER"; then
        echo "nginx started but did not answer $URL within 30 s (last HTTP code '${code:-}')" >>"$d/fail"
    else
        local why
        why=$(grep -h '\[emerg\]\|\[alert\]' "$PREFIX/error.log" "$d/nginx.err" 2>/dev/null | tail -n 1 |
            sed 's/^.*\[\(emerg\|alert\)\] [0-9#]*: //; s/^nginx: \[\(emerg\|alert\)\] //')
        echo "nginx did not start${why:+: $why}" >>"$d/fail"
    fi
    return 1
}

# stop_nginx [quiet]: SIGQUIT to the master (graceful), SIGKILL after 10 s; then every
# nginx left in S; then ustackd (it exits by itself once no nginx holds its pipe).
stop_nginx() {
    local p i
    [ -n "$NGX_LAUNCH$NGX_MASTER" ] || return 0
    [ -z "$NGX_MASTER" ] && NGX_MASTER=$(cat "$PREFIX/nginx.pid" 2>/dev/null)
    if [ -n "$NGX_MASTER" ] && ! kill_bounded "$NGX_MASTER" QUIT 10; then
        [ "${1:-}" = quiet ] || echo "nginx master did not exit within 10 s of SIGQUIT: killed" >>"$CUR/stopfail"
    fi
    [ -n "$NGX_LAUNCH" ] && kill_bounded "$NGX_LAUNCH" TERM 2
    wait "$NGX_LAUNCH" 2>/dev/null
    for p in $(ip netns pids "$NS_S" 2>/dev/null); do
        [ "$(comm_of "$p")" = nginx ] && kill -KILL "$p" 2>/dev/null
    done
    # Only ustackd processes still in our S: a pid of ours may have been reused since.
    note_ustackd
    for p in $(ip netns pids "$NS_S" 2>/dev/null); do
        [ "$(comm_of "$p")" = ustackd ] || continue
        for ((i = 0; i < 100; i++)); do alive "$p" || break; sleep 0.1; done
        if alive "$p"; then
            [ "${1:-}" = quiet ] || echo "ustackd $p still running 10 s after nginx exited: stopped" >>"$CUR/stopfail"
            kill_bounded "$p" TERM 5
        fi
    done
    for p in $USTACKD_PIDS; do alive "$p" || rm -rf "/var/run/dpdk/ustack-$p"; done
    ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
    ip -n "$NS_S" addr flush dev "$V_S" 2>/dev/null
    NGX_LAUNCH="" NGX_MASTER=""
}

# ------------------------------------------------------------------ one run

# field FILE LABEL: the first number after "LABEL:" in ab's output.
field() { sed -n "s/^$2: *\([0-9.]*\).*/\1/p" "$1" | head -n 1; }
pct() { awk -v p="$2%" '$1 == p { print $2; exit }' "$1"; }

# TCP counters: the client's kernel TCP in C (SYN and data retransmissions, which is what a
# full listen queue or a lost segment costs ab), and the kernel server's listen queue in S.
tcp_counters() {
    ip netns exec "$NS_C" nstat -asz 2>/dev/null |
        awk '$1 == "TcpExtTCPSynRetrans" || $1 == "TcpRetransSegs" || $1 == "TcpExtTCPTimeouts" { print "c." $1, $2 }'
    ip netns exec "$NS_S" nstat -asz 2>/dev/null |
        awk '$1 == "TcpExtListenOverflows" || $1 == "TcpExtListenDrops" { print "s." $1, $2 }'
}
# CPU ticks of every process in S (nginx master and worker, ustackd with all its threads).
# The kernel run's softirq work is not in it (it is nobody's process time).
cpu_counters() {
    local p t=0 f
    for p in $(ip netns pids "$NS_S" 2>/dev/null); do
        f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        t=$((t + ${f:-0}))
    done
    echo "s.cpu $t"
}
HZ=$(getconf CLK_TCK)
# cdelta BEFORE AFTER NAME
cdelta() { awk -v n="$3" 'FNR == NR { if ($1 == n) b = $2; next } $1 == n { a = $2 } END { print a - b }' "$1" "$2"; }

# run_ab SIDE ROUND SCEN DIR: one ab run from C; a line into results.tsv.
run_ab() {
    local side=$1 round=$2 scen=$3 d=$4 rc out complete failed non2xx rps tpm tpa taken ka reason=""
    local -a args=(-r -n "$REQS" -c "$CONC")
    [ "$scen" = keepalive ] && args=(-k "${args[@]}")
    out="$d/ab-$scen.out"
    echo "ip netns exec C timeout $ABT ab ${args[*]} $URL" >"$d/ab-$scen.cmd"
    log "$side round $round: ab ${args[*]} $URL"
    { tcp_counters; cpu_counters; } >"$d/tcp-$scen.before"
    # In the background and waited for, so that a signal to this script acts at once.
    # shellcheck disable=SC2016
    ip netns exec "$NS_C" sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        timeout -k 5 "$ABT" ab "${args[@]}" "$URL" >"$out" 2>"$d/ab-$scen.err" </dev/null &
    AB_PID=$!
    # Waited for in short steps (a signal to this script acts at once) while watching the
    # server: when nginx (or ustackd) is gone, ab would only wait out its own timeouts.
    local gone=0 p up
    while alive "$AB_PID"; do
        up=1
        alive "$NGX_MASTER" || up=0
        if [ "$side" = ustack ]; then
            up=0
            for p in $CUR_USTACKD; do alive "$p" && up=1; done
        fi
        [ "$up" = 1 ] && gone=0 || gone=$((gone + 1))
        if [ "$gone" -ge 25 ]; then
            echo "the server went away during the run: ab stopped" >>"$d/ab-$scen.err"
            kill -TERM "$AB_PID" 2>/dev/null  # timeout passes it on to ab
            break
        fi
        sleep 0.2
    done
    rc=0; wait "$AB_PID" || rc=$?
    AB_PID=""
    { tcp_counters; cpu_counters; } >"$d/tcp-$scen.after"
    local synr retr lovf scpu
    synr=$(cdelta "$d/tcp-$scen.before" "$d/tcp-$scen.after" c.TcpExtTCPSynRetrans)
    retr=$(cdelta "$d/tcp-$scen.before" "$d/tcp-$scen.after" c.TcpRetransSegs)
    lovf=$(cdelta "$d/tcp-$scen.before" "$d/tcp-$scen.after" s.TcpExtListenOverflows)
    scpu=$(awk -v t="$(cdelta "$d/tcp-$scen.before" "$d/tcp-$scen.after" s.cpu)" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')
    complete=$(field "$out" "Complete requests")
    failed=$(field "$out" "Failed requests")
    non2xx=$(field "$out" "Non-2xx responses"); [ -n "$complete" ] && non2xx=${non2xx:-0}
    ka=$(field "$out" "Keep-Alive requests")
    rps=$(field "$out" "Requests per second")
    taken=$(field "$out" "Time taken for tests")
    tpm=$(sed -n 's/^Time per request: *\([0-9.]*\) \[ms\] (mean)$/\1/p' "$out" | head -n 1)
    tpa=$(sed -n 's/^Time per request: *\([0-9.]*\) \[ms\] (mean, across.*/\1/p' "$out" | head -n 1)
    [ "$rc" = 124 ] && reason="ab did not finish within $ABT s"
    [ -z "$reason" ] && [ "$rc" != 0 ] && reason="ab exit status $rc: $(grep -v '^Completed\|^Finished\|^Benchmarking\|^$' "$d/ab-$scen.err" | tail -n 3 | paste -sd ' ')"
    [ -z "$reason" ] && [ -z "$rps" ] && reason="no result from ab"
    [ -z "$reason" ] && [ "$complete" != "$REQS" ] && reason="$complete of $REQS requests completed"
    [ -z "$reason" ] && [ "${failed:-0}" != 0 ] && reason="$failed failed requests ($(sed -n 's/^ *(Connect: \(.*\))$/\1/p' "$out" | head -n 1))"
    [ -z "$reason" ] && [ "${non2xx:-0}" != 0 ] && reason="$non2xx non-2xx responses"
    [ -z "$reason" ] && { alive "$NGX_MASTER" || reason="nginx master exited during the run"; }
    if [ -z "$reason" ] && [ "$side" = ustack ]; then
        local p up=0
        for p in $CUR_USTACKD; do alive "$p" && up=1; done
        [ "$up" = 1 ] || reason="ustackd exited during the run"
    fi
    [ -n "$reason" ] && { FAILS=$((FAILS + 1)); log "$side round $round $scen: FAILED: $reason"; }
    [ -z "$reason" ] && log "$side round $round $scen: $rps req/s, mean $tpm ms, p99 $(pct "$out" 99) ms in $taken s;" \
        "server processes' CPU $scpu s; client SYN retransmits $synr, retransmitted segments" \
        "$retr$([ "$side" = kernel ] && echo ", server listen overflows $lovf")"
    {
        printf '%s\t' "$round" "$side" "$scen" "$rc" "$complete" "$failed" "$non2xx" "$ka" "$rps" "$taken" \
            "$tpm" "$tpa" "$(pct "$out" 50)" "$(pct "$out" 90)" "$(pct "$out" 99)" "$(pct "$out" 100)"
        printf '%s\t' "$(printf '%s' "$reason" | tr -d '\000-\037')"
        printf '%s\t%s\t%s\t%s\n' "$synr" "$retr" "$([ "$side" = kernel ] && echo "$lovf")" "$scpu"
    } >>"$TMPD/results.tsv"
}

# sha_check SIDE ROUND DIR: 1mb.bin through curl from C, byte-exact.
sha_check() {
    local side=$1 round=$2 d=$3 got rc=0 reason=""
    ip netns exec "$NS_C" timeout 60 curl -s -S --max-time 50 -o "$d/1mb.got" "http://$IP_S/1mb.bin" \
        2>"$d/curl.err" || rc=$?
    got=$(sha256sum <"$d/1mb.got" 2>/dev/null | cut -d' ' -f1)
    if [ "$rc" != 0 ]; then
        reason="curl exit status $rc: $(head -c 200 "$d/curl.err" | tr '\n' ' ')"
    elif [ "$got" != "$SHA_1MB" ]; then
        reason="sha256 mismatch: $(stat -c %s "$d/1mb.got") bytes, sha256 $got"
    fi
    if [ -n "$reason" ]; then
        FAILS=$((FAILS + 1)); log "$side round $round: curl 1mb.bin FAILED: $reason"
    else
        log "$side round $round: curl 1mb.bin: sha256 matches"
    fi
    printf '%s\t%s\t%s\t%s\n' "$round" "$side" "${got:-}" "$reason" >>"$TMPD/sha.tsv"
    rm -f "$d/1mb.got"
}

# ustackd_stats ROUND DIR: SIGUSR1 to ustackd, its per-core counters (from its log) into
# ustackd.tsv for the JSON. Best effort, bounded (5 s).
ustackd_stats() {
    local round=$1 d=$2 p i before
    for p in $CUR_USTACKD; do
        if ! alive "$p" || [ "$(comm_of "$p")" != ustackd ]; then continue; fi
        before=$(grep -c '^ustackd: stats end' "$d/ustackd.log" 2>/dev/null)
        kill -USR1 "$p" 2>/dev/null || continue
        for ((i = 0; i < 50; i++)); do
            [ "$(grep -c '^ustackd: stats end' "$d/ustackd.log" 2>/dev/null)" -gt "${before:-0}" ] && break
            sleep 0.1
        done
        awk -v n="${before:-0}" -v r="$round" '
            /^ustackd: stats end/ { c++; if (c > n) exit; next }
            c == n && /^ustackd: stats / { sub(/^ustackd: stats /, ""); print r "\t" $0 }' "$d/ustackd.log" \
            >>"$TMPD/ustackd.tsv"
    done
}

# fail_side SIDE ROUND DIR: nginx did not come up; every measurement of the side fails.
fail_side() {
    local side=$1 round=$2 d=$3 reason s
    reason=$(paste -sd ';' "$d/fail")
    FAILS=$((FAILS + 1))
    log "$side round $round: FAILED: $reason"
    for f in nginx.err error.log ustackd.log; do
        case $f in error.log) s=$PREFIX/error.log ;; *) s=$d/$f ;; esac
        [ -s "$s" ] || continue
        echo "    --- $f (last 15 lines) ---" >&2
        tail -n 15 "$s" | sed 's/^/    /' >&2
    done
    for s in close keepalive; do
        # 21 columns as run_ab writes them: round side scenario, 13 empty, the reason, 4 empty.
        {
            printf '%s\t%s\t%s\t' "$round" "$side" "$s"
            printf '\t%.0s' 4 5 6 7 8 9 10 11 12 13 14 15 16
            printf '%s\t\t\t\t\n' "$reason"
        } >>"$TMPD/results.tsv"
    done
    printf '%s\t%s\t\t%s\n' "$round" "$side" "$reason" >>"$TMPD/sha.tsv"
}

# one_side SIDE ROUND
one_side() {
    local side=$1 round=$2 d
    d="$TMPD/runs/$round.$side"
    CUR=$d
    mkdir -p "$d"
    if ! start_nginx "$side" "$d"; then
        fail_side "$side" "$round" "$d"
        stop_nginx quiet
        cp "$PREFIX/error.log" "$d/error.log" 2>/dev/null
        return
    fi
    if [ -s "$d/fail" ]; then
        FAILS=$((FAILS + 1)); log "$side round $round: FAILED: $(paste -sd ';' "$d/fail")"
        printf '%s\t%s\t\t%s\n' "$round" "$side" "$(paste -sd ';' "$d/fail")" >>"$TMPD/other.tsv"
    fi
    sha_check "$side" "$round" "$d"
    run_ab "$side" "$round" close "$d"
    run_ab "$side" "$round" keepalive "$d"
    [ "$side" = ustack ] && ustackd_stats "$round" "$d"
    stop_nginx
    cp "$PREFIX/error.log" "$d/error.log" 2>/dev/null
    if [ -s "$d/stopfail" ]; then
        # Problems found while stopping (the measurements are already recorded).
        FAILS=$((FAILS + 1))
        while IFS= read -r l; do
            log "$side round $round: FAILED: $l"
            printf '%s\t%s\t\t%s\n' "$round" "$side" "$l" >>"$TMPD/other.tsv"
        done <"$d/stopfail"
    fi
    if grep -q '\[alert\]\|\[emerg\]\|\[crit\]' "$d/error.log" 2>/dev/null; then
        log "$side round $round: nginx error.log has alerts:"
        grep '\[alert\]\|\[emerg\]\|\[crit\]' "$d/error.log" | tail -n 5 | sed 's/^/    /' >&2
    fi
}

# ------------------------------------------------------------------ report

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# col SIDE SCEN N: column N (1-based, see run_ab) of the successful runs.
col() { awk -F'\t' -v s="$1" -v c="$2" -v n="$3" '$2 == s && $3 == c && $17 == "" && $n != "" { print $n }' "$TMPD/results.tsv"; }
nruns() { awk -F'\t' -v s="$1" -v c="$2" -v f="$3" '$2 == s && $3 == c && (f == "all" || $17 != "") { n++ } END { print n + 0 }' "$TMPD/results.tsv"; }
sumcol() { awk -F'\t' -v s="$1" -v c="$2" -v n="$3" '$2 == s && $3 == c { t += $n; any = any || $n != "" } END { if (any) print t; else print "-" }' "$TMPD/results.tsv"; }

jstr() {
    local s
    s=$(printf '%s' "$1" | tr -d '\000-\010\013\014\016-\037')
    s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/\\t}; s=${s//$'\n'/\\n}; s=${s//$'\r'/}
    printf '"%s"' "$s"
}
pair() { printf '%s / %s' "${1:--}" "${2:--}"; }
jnum() { if [ -n "$1" ] && [ "$1" != - ]; then printf '%s' "$1"; else printf null; fi; }

report() {
    REPORTED=1
    local sc u k ratio uf kf label w=26
    touch "$TMPD/results.tsv" "$TMPD/sha.tsv" "$TMPD/other.tsv" "$TMPD/ustackd.tsv"
    echo
    case " $SIDES " in
        *" ustack "*) echo "nginx $NGINX_VER under ustack (LD_PRELOAD=libustack.so, ustackd on $V_S through AF_XDP, USTACK_CORES=$CORES)" ;;
        *) echo "nginx $NGINX_VER: no ustack run (${LIB_PROBLEM:-not asked for})" ;;
    esac
    case " $SIDES " in
        *" kernel "*) echo "vs the same nginx on the kernel's TCP; ab $AB_VER from the kernel side; median of $ROUNDS round(s)" ;;
        *) echo "no kernel run; ab $AB_VER from the kernel side; median of $ROUNDS round(s)" ;;
    esac
    [ "$INTERRUPTED" = 1 ] && echo "INTERRUPTED: partial results"
    echo
    printf "%-${w}s %13s %13s %14s %11s %19s %13s\n" scenario "ustack req/s" "kernel req/s" "ustack/kernel" \
        "failed u/k" "mean ms u/k" "p99 ms u/k"
    for sc in close keepalive; do
        case $sc in close) label="ab -n $REQS -c $CONC" ;; *) label="ab -k -n $REQS -c $CONC" ;; esac
        u=$(col ustack "$sc" 9 | median); k=$(col kernel "$sc" 9 | median)
        ratio="-"
        [ -n "$u" ] && [ -n "$k" ] && ratio=$(awk -v a="$u" -v b="$k" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
        uf=$(sumcol ustack "$sc" 6); kf=$(sumcol kernel "$sc" 6)
        [ "$(nruns ustack "$sc" bad)" -gt 0 ] && uf="$uf(F)"
        [ "$(nruns kernel "$sc" bad)" -gt 0 ] && kf="$kf(F)"
        printf "%-${w}s %13s %13s %14s %11s %19s %13s\n" "$label" "${u:--}" "${k:--}" "$ratio" "$uf / $kf" \
            "$(pair "$(col ustack "$sc" 11 | median)" "$(col kernel "$sc" 11 | median)")" \
            "$(pair "$(col ustack "$sc" 15 | median)" "$(col kernel "$sc" 15 | median)")"
    done
    local us ks
    us=$(awk -F'\t' '$2 == "ustack" { n++; if ($4 != "") bad++ } END { if (!n) print "-"; else if (bad) print bad " of " n " FAILED"; else print "ok (" n ")" }' "$TMPD/sha.tsv")
    ks=$(awk -F'\t' '$2 == "kernel" { n++; if ($4 != "") bad++ } END { if (!n) print "-"; else if (bad) print bad " of " n " FAILED"; else print "ok (" n ")" }' "$TMPD/sha.tsv")
    printf "%-${w}s %13s %13s\n" "curl 1mb.bin sha256" "$us" "$ks"
    if [ -s "$TMPD/other.tsv" ] || awk -F'\t' '$17 != "" { f = 1 } END { exit !f }' "$TMPD/results.tsv" ||
        awk -F'\t' '$4 != "" { f = 1 } END { exit !f }' "$TMPD/sha.tsv"; then
        echo "FAILURES ((F): a failed run, left out of the medians):"
    fi
    awk -F'\t' '$17 != "" { printf "  round %s %s %s: %s\n", $1, $2, $3, $17 }' "$TMPD/results.tsv"
    awk -F'\t' '$4 != "" { printf "  round %s %s curl 1mb.bin: %s\n", $1, $2, $4 }' "$TMPD/sha.tsv"
    awk -F'\t' '{ printf "  round %s %s: %s\n", $1, $2, $4 }' "$TMPD/other.tsv"
    [ -n "$LIB_PROBLEM" ] && echo "NO USTACK RUN: $LIB_PROBLEM"

    # JSON with every run (not for an interrupted run, unless --out names a file).
    if [ "$INTERRUPTED" = 1 ] && [ -z "$OUT" ]; then
        echo "interrupted: no JSON written"
        return 0
    fi
    mkdir -p "$ROOT/bench/results"
    [ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date +%Y%m%dT%H%M%S)-$(hostname -s)-demo.json"
    local commit model
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || commit="$commit+dirty"
    model=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1)
    {
        printf '{\n "benchmark": "demo",\n "command": %s,\n' "$(jstr "bench/demo.sh${ARGS:+ $ARGS}")"
        printf ' "commit": %s,\n "binaries_sha256": %s,\n' "$(jstr "$commit")" "$(jstr "$BINARIES")"
        printf ' "host": %s,\n "kernel": %s,\n "cpu_model": %s,\n "nproc": %s,\n' "$(jstr "$(hostname)")" \
            "$(jstr "$(uname -r)")" "$(jstr "$model")" "$(nproc)"
        printf ' "loadavg_end": %s,\n "nginx": %s,\n "ab": %s,\n' "$(jstr "$(cat /proc/loadavg)")" \
            "$(jstr "$NGINX_VER")" "$(jstr "$AB_VER")"
        printf ' "requests": %s,\n "concurrency": %s,\n "rounds": %s,\n "ustack_cores": %s,\n' \
            "$REQS" "$CONC" "$ROUNDS" "$(jstr "$CORES")"
        printf ' "nginx_daemon": %s,\n "ustack_env": %s,\n "url": %s,\n' "$(jstr "$DAEMON")" \
            "$(case " $SIDES " in *" ustack "*) jstr "${U_ENV[*]}" ;; *) echo null ;; esac)" "$(jstr "$URL")"
        printf ' "interrupted": %s,\n "ustack_missing": %s,\n' \
            "$([ "$INTERRUPTED" = 1 ] && echo true || echo false)" "$(if [ -n "$LIB_PROBLEM" ]; then jstr "$LIB_PROBLEM"; else echo null; fi)"
        printf ' "summary": ['
        for sc in close keepalive; do
            u=$(col ustack "$sc" 9 | median); k=$(col kernel "$sc" 9 | median)
            ratio=""
            [ -n "$u" ] && [ -n "$k" ] && ratio=$(awk -v a="$u" -v b="$k" 'BEGIN { if (b > 0) printf "%.4f", a / b }')
            [ "$sc" = keepalive ] && printf ','
            printf '\n  {"scenario": %s, "ustack_rps": %s, "kernel_rps": %s, "ratio": %s, "ustack_failed_runs": %s, "kernel_failed_runs": %s}' \
                "$(jstr "$sc")" "$(jnum "$u")" "$(jnum "$k")" "$(jnum "$ratio")" \
                "$(nruns ustack "$sc" bad)" "$(nruns kernel "$sc" bad)"
        done
        printf '\n ],\n "runs": ['
        awk -F'\t' '
            function js(v) { gsub(/\\/, "/", v); gsub(/"/, "\047", v); return "\"" v "\"" }
            function jn(v) { return v == "" ? "null" : v }
            BEGIN { split("round side scenario ab_exit complete failed non2xx keepalive_requests rps time_taken_s time_per_request_ms time_per_request_all_ms p50_ms p90_ms p99_ms max_ms failure client_syn_retransmits client_retransmitted_segments server_listen_overflows server_cpu_s", k, " ") }
            {
                printf "%s\n  {", (NR > 1 ? "," : "")
                for (i = 1; i <= 21; i++) {
                    v = (i == 2 || i == 3) ? js($i) : (i == 17 ? ($i == "" ? "null" : js($i)) : jn($i))
                    printf "\"%s\": %s%s", k[i], v, (i < 21 ? ", " : "}")
                }
            }' "$TMPD/results.tsv"
        printf '\n ],\n "sha256_1mb": {"expected": %s, "checks": [' "$(jstr "$SHA_1MB")"
        awk -F'\t' '
            function js(v) { gsub(/\\/, "/", v); gsub(/"/, "\047", v); return "\"" v "\"" }
            { printf "%s\n  {\"round\": %s, \"side\": %s, \"sha256\": %s, \"failure\": %s}", (NR > 1 ? "," : ""),
                $1, js($2), ($3 == "" ? "null" : js($3)), ($4 == "" ? "null" : js($4)) }' "$TMPD/sha.tsv"
        printf '\n ]},\n "other_failures": ['
        awk -F'\t' '
            function js(v) { gsub(/\\/, "/", v); gsub(/"/, "\047", v); return "\"" v "\"" }
            { printf "%s\n  {\"round\": %s, \"side\": %s, \"failure\": %s}", (NR > 1 ? "," : ""), $1, js($2), js($4) }' "$TMPD/other.tsv"
        printf '\n ],\n "ustackd_stats": ['
        awk -F'\t' '
            function js(v) { gsub(/\\/, "/", v); gsub(/"/, "\047", v); return "\"" v "\"" }
            { printf "%s\n  {\"round\": %s, \"line\": %s}", (NR > 1 ? "," : ""), $1, js($2) }' "$TMPD/ustackd.tsv"
        printf '\n ]\n}\n'
    } >"$OUT"
    echo "results: $OUT"
}

# ------------------------------------------------------------------ main
log "namespaces $NS_C (ab, $IP_C) and $NS_S (nginx, $IP_S); $ROUNDS round(s) of: $SIDES"
log "load average: $(cat /proc/loadavg) (other work on the machine skews every number)"
: >"$TMPD/results.tsv"; : >"$TMPD/sha.tsv"; : >"$TMPD/other.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
    for side in $SIDES; do one_side "$side" "$r"; done
done
report
[ "$FAILS" -gt 0 ] && { log "$FAILS failure(s): see above"; exit 1; }
[ -n "$LIB_PROBLEM" ] && exit 2
exit 0
