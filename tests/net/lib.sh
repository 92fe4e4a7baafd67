# shellcheck shell=bash
# tests/net/lib.sh - harness for the network tests of ustackd against the Linux kernel.
#
# Sourced by tests/net/test_*.sh (bash, run as root). Topology (DESIGN.md section 4):
#
#   netns usk-k-<id>  (kernel peer)                 netns usk-u-<id>  (ustack side)
#   veth usk-k  198.18.X.1/24  <---- veth ---->     veth usk-u, no kernel address;
#   offloads off, IPv6 off                          ustackd owns 198.18.X.2 through
#                                                   net_af_xdp / net_af_packet on usk-u
#
# The veth is created directly inside the two namespaces, so its names never collide with
# another run; the namespaces carry a unique run id. X is per test (addresses are private to
# a namespace pair anyway). Everything is undone by an EXIT/INT/TERM trap, even on failure.
#
# Typical use:
#   . "$(dirname "$0")/lib.sh"
#   net_init ping 10            # test name, X
#   ustackd_start "$(net_dev af_packet)" --echo 7
#   ... net_k ping -c 5 -W 2 "$IP_U" ...
#   ustackd_stats s; v=$(stat_sum "$s" icmp_echo_replies)
#   ustackd_stop
#   net_pass
#
# With NET_RELAY=1 set before net_init, a third namespace usk-r-<id> sits between the two
# (tests/net/test_faults.sh): usk-k <-veth-> usk-rk [relay ns] usk-ru <-veth-> usk-u, no
# address in the relay namespace, offloads and IPv6 off there too; nothing crosses until a
# program there (build/tests/relay) forwards frames between usk-rk and usk-ru. Run commands
# there with net_r.
#
# Knobs (environment): USTACKD (binary, default build/ustackd), LOADGEN (default
# build/bench/loadgen), NET_USTACK_EAL (extra EAL arguments passed as USTACK_EAL),
# NET_USTACK_LOG (USTACK_LOG), NET_BPFFS=0 (do not mount bpffs for ustackd), NET_KEEP=1
# (keep the temp directory), NET_VERBOSE=1 (show ustackd output on success too).

set -eEu
set -o pipefail

NET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
USTACKD=${USTACKD:-$NET_ROOT/build/ustackd}
LOADGEN=${LOADGEN:-$NET_ROOT/build/bench/loadgen}
NET_READY_SECS=${NET_READY_SECS:-30}
NET_STOP_SECS=${NET_STOP_SECS:-15}

# Nothing from the caller's environment may configure ustackd behind the test's back.
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')
unset _v

NET_NAME=""          # test name, for PASS/FAIL lines
NET_DONE=0           # a result line was printed
NET_ERR_WHERE=""     # last failed command (ERR trap)
NET_BG_PIDS=""       # background helpers to kill at teardown
NET_TMPD=""
NS_K=""; NS_U=""; NS_R=""
VETH_K=usk-k; VETH_U=usk-u
VETH_RK=usk-rk; VETH_RU=usk-ru   # the relay namespace's ends (NET_RELAY=1)
NET_RELAY=${NET_RELAY:-0}
IP_K=""; IP_U=""; NET_X=""
USTACKD_PID=""; USTACKD_OUT=""; USTACKD_ERR=""; USTACKD_N=0
NET_USTACKD_PIDS=""  # every ustackd started, for their DPDK runtime directories
U_CORES=0; U_MTU=""; U_GW=""   # set by tests before ustackd_start
U_IP6=""; U_GW6=""              # USTACK_IP6 / USTACK_GW6 for ustackd_start (test_ping6)
U_STACKD_ENV=""                # more NAME=VALUE settings for ustackd_start, blank-separated

# ---------------------------------------------------------------- results and traps

net_log() { printf '  [%s] %s\n' "$NET_NAME" "$*" >&2; }

# Show the current ustackd's output (on failure, or with NET_VERBOSE=1); a live ustackd is
# first asked for its statistics (bounded, best effort).
net__dump_ustackd() {
    [ -n "$USTACKD_OUT" ] || return 0
    if [ -n "$USTACKD_PID" ] && proc_alive "$USTACKD_PID"; then
        local before i
        before=$(net__count_ends)
        kill -USR1 "$USTACKD_PID" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do
            [ "$(net__count_ends)" -gt "$before" ] && break
            sleep 0.1
        done
    fi
    if [ -s "$USTACKD_OUT" ]; then
        echo "  --- ustackd stdout (last 25 lines) ---" >&2
        tail -n 25 "$USTACKD_OUT" >&2
    fi
    if [ -s "$USTACKD_ERR" ]; then
        echo "  --- ustackd stderr (last 25 lines) ---" >&2
        tail -n 25 "$USTACKD_ERR" >&2
    fi
}

net_pass() {
    [ "${NET_VERBOSE:-0}" = 1 ] && net__dump_ustackd
    NET_DONE=1
    echo "PASS $NET_NAME"
    exit 0
}

net_fail() {
    if [ "$BASH_SUBSHELL" -gt 0 ]; then
        # Inside $(...): leave the reason for the main shell's EXIT trap.
        [ -n "$NET_TMPD" ] && [ ! -e "$NET_TMPD/fail.reason" ] && echo "$*" >"$NET_TMPD/fail.reason"
        exit 1
    fi
    if [ "$NET_DONE" = 0 ]; then
        NET_DONE=1
        net__dump_ustackd
        if [ ${#NET_FAILS[@]} -gt 0 ]; then
            echo "FAIL $NET_NAME: $(net__joined_fails); $*"
        else
            echo "FAIL $NET_NAME: $*"
        fi
    fi
    exit 1
}

# A failed check that does not stop the test: reported at net_finish, which prints PASS or
# one FAIL line with every reason.
NET_FAILS=()
net_softfail() {
    net_log "FAILED: $*"
    net__dump_ustackd
    NET_FAILS+=("$*")
}

net_finish() {
    [ ${#NET_FAILS[@]} = 0 ] && net_pass
    NET_DONE=1
    echo "FAIL $NET_NAME: $(net__joined_fails)"
    exit 1
}

net__joined_fails() {
    local msg="" r
    for r in "${NET_FAILS[@]}"; do msg="${msg:+$msg; }$r"; done
    printf '%s' "$msg"
}

net_skip() {
    NET_DONE=1
    echo "SKIP $NET_NAME: $*"
    exit 77
}

net__on_err() { NET_ERR_WHERE="line $1: $2"; }

net__on_signal() {
    trap - INT TERM
    net_fail "interrupted by SIG$1"
}

net__on_exit() {
    local rc=$?
    set +eE
    trap - ERR INT TERM
    if [ "$NET_DONE" = 0 ]; then
        net__dump_ustackd
        if [ -n "$NET_TMPD" ] && [ -s "$NET_TMPD/fail.reason" ]; then
            echo "FAIL ${NET_NAME:-net}: $(head -n 1 "$NET_TMPD/fail.reason")"
        else
            echo "FAIL ${NET_NAME:-net}: aborted (exit $rc)${NET_ERR_WHERE:+ at $NET_ERR_WHERE}"
        fi
        [ "$rc" = 0 ] && rc=1
    fi
    net_teardown
    exit "$rc"
}

# Bounded kill of one of our processes: SIGTERM, wait up to $2 s, then SIGKILL.
net__kill_pid() {
    local pid=$1 secs=${2:-5} i
    proc_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        proc_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

net_teardown() {
    local p ns
    if [ -n "$USTACKD_PID" ]; then
        net__kill_pid "$USTACKD_PID" 5
        USTACKD_PID=""
    fi
    for p in $NET_BG_PIDS; do net__kill_pid "$p" 2; done
    NET_BG_PIDS=""
    # Whatever still runs inside our own namespaces was started by this test.
    for ns in $NS_K $NS_U $NS_R; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
    for ns in $NS_K $NS_U $NS_R; do
        ip netns del "$ns" 2>/dev/null || true
        # Per-namespace files for `ip netns exec` (a test's resolv.conf, test_udp.sh).
        [ -n "$ns" ] && rm -rf "/etc/netns/$ns"
    done
    NS_K=""; NS_U=""; NS_R=""
    # ustackd's EAL file prefix is ustack-<pid>; DPDK leaves that runtime directory behind.
    for p in $NET_USTACKD_PIDS; do
        proc_alive "$p" || rm -rf "/var/run/dpdk/ustack-$p"
    done
    NET_USTACKD_PIDS=""
    if [ -n "$NET_TMPD" ] && [ -d "$NET_TMPD" ]; then
        if [ "${NET_KEEP:-0}" = 1 ]; then
            echo "  [$NET_NAME] kept $NET_TMPD" >&2
        else
            rm -rf "$NET_TMPD"
        fi
    fi
    NET_TMPD=""
}

# ---------------------------------------------------------------- helpers

# True if the pid exists and is not a zombie.
proc_alive() {
    local st
    [ -r "/proc/$1/stat" ] || return 1
    st=$(sed 's/^.*) \(.\).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Run a command in the kernel peer's / the ustack side's namespace.
net_k() { ip netns exec "$NS_K" "$@"; }
net_u() { ip netns exec "$NS_U" "$@"; }
net_r() { ip netns exec "$NS_R" "$@"; }

# Register a background pid for teardown.
net_bg() { NET_BG_PIDS="$NET_BG_PIDS $1"; }

# The DPDK vdev string for a driver kind on the ustack-side veth.
#   af_xdp | af_packet | af_packet_q2 (two queue pairs through PACKET_FANOUT)
# AF_XDP on veth: native XDP attaches fine; the veth must keep a single rx queue (with more,
# the peer's traffic lands on queues without a socket and reaches the kernel instead), and
# DPDK 22.11 refuses queue_count > 1 on veth (it checks "combined" channels, veth has none).
net_dev() {
    case $1 in
        af_xdp) echo "net_af_xdp0,iface=$VETH_U" ;;
        af_packet) echo "net_af_packet0,iface=$VETH_U" ;;
        af_packet_q2) echo "net_af_packet0,iface=$VETH_U,qpairs=2" ;;
        *) net_fail "unknown device kind $1" ;;
    esac
}

net_require_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || net_fail "required tool '$t' not found (tools/deps.sh installs it)"
    done
}

net_require_ustackd() {
    [ -x "$USTACKD" ] || net_fail "$USTACKD not built (make build/ustackd)"
}

net_require_loadgen() {
    [ -x "$LOADGEN" ] || net_fail "$LOADGEN not built (make build/bench/loadgen)"
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }

# wait_for SECS CMD...: CMD every 0.1 s until it succeeds; false once SECS have passed
# (a deadline: CMD may itself take a while, as nc -w 1 does).
wait_for() {
    local end=$(($(ms_now) + $1 * 1000))
    shift
    while :; do
        "$@" && return 0
        [ "$(ms_now)" -lt "$end" ] || return 1
        sleep 0.1
    done
}

# wait_until SECS CMD...: poll CMD every 0.1 s until it succeeds or SECS pass.
wait_until() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    "$@"
}

# ---------------------------------------------------------------- topology

# net_init NAME X: checks, unique namespaces, veth pair, addresses, traps.
net_init() {
    NET_NAME=$1
    NET_X=$2
    trap 'net__on_err $LINENO "$BASH_COMMAND"' ERR
    trap net__on_exit EXIT
    trap 'net__on_signal INT' INT
    trap 'net__on_signal TERM' TERM

    [ "$(id -u)" = 0 ] || net_fail "must run as root"
    net_require_tools ip ethtool timeout sysctl
    ip netns list >/dev/null 2>&1 || net_fail "'ip netns' is not usable"
    case $NET_X in
        '' | *[!0-9]*) net_fail "bad subnet index '$NET_X'" ;;
    esac
    [ "$NET_X" -le 255 ] || net_fail "subnet index $NET_X out of 0..255"

    local id
    id="$$-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    NS_K="usk-k-$NET_NAME-$id"
    NS_U="usk-u-$NET_NAME-$id"
    IP_K="198.18.$NET_X.1"
    IP_U="198.18.$NET_X.2"
    NET_TMPD=$(mktemp -d "${TMPDIR:-/tmp}/usk-net-$NET_NAME.XXXXXX")

    # Root namespace: anything that leaks out of a test namespace for the test range goes
    # nowhere. Added once and left in place (harmless, and safe with concurrent runs).
    if ! ip route show type blackhole 2>/dev/null | grep -q '198\.18\.0\.0/15'; then
        ip route add blackhole 198.18.0.0/15 2>/dev/null || true
    fi

    ip netns add "$NS_K" || net_fail "ip netns add $NS_K failed"
    ip netns add "$NS_U" || { NS_U=""; net_fail "ip netns add usk-u-$NET_NAME-$id failed"; }
    if [ "$NET_RELAY" = 1 ]; then
        NS_R="usk-r-$NET_NAME-$id"
        ip netns add "$NS_R" || { NS_R=""; net_fail "ip netns add usk-r-$NET_NAME-$id failed"; }
    fi
    net_link_setup "$@"
}

# (Re)create the veth pair. Extra ip-link arguments for the pair may follow NAME X.
net_link_setup() {
    local ns
    ip -n "$NS_K" link del "$VETH_K" 2>/dev/null || true
    if [ "$NET_RELAY" = 1 ]; then
        ip -n "$NS_U" link del "$VETH_U" 2>/dev/null || true
        ip -n "$NS_K" link add "$VETH_K" type veth peer name "$VETH_RK" netns "$NS_R" \
            || net_fail "cannot create the kernel-relay veth pair"
        ip -n "$NS_U" link add "$VETH_U" type veth peer name "$VETH_RU" netns "$NS_R" \
            || net_fail "cannot create the ustack-relay veth pair"
        net_r sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
        net_r sysctl -qw net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
        ip -n "$NS_R" link set lo up
        for ns in "$VETH_RK" "$VETH_RU"; do
            net_r ethtool -K "$ns" tx off rx off gso off gro off tso off >/dev/null 2>&1 || true
            net_r sysctl -qw "net.ipv6.conf.$ns.disable_ipv6=1" >/dev/null 2>&1 || true
            ip -n "$NS_R" link set "$ns" up
        done
    else
        ip -n "$NS_K" link add "$VETH_K" type veth peer name "$VETH_U" netns "$NS_U" \
            || net_fail "cannot create the veth pair"
    fi
    for ns in "$NS_K" "$NS_U"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
        ip -n "$ns" link set lo up
    done
    # Features a veth cannot change make ethtool fail; that is fine.
    net_k ethtool -K "$VETH_K" tx off rx off gso off gro off tso off >/dev/null 2>&1 || true
    net_u ethtool -K "$VETH_U" tx off rx off gso off gro off tso off >/dev/null 2>&1 || true
    net_u sysctl -qw "net.ipv6.conf.$VETH_U.disable_ipv6=1" >/dev/null 2>&1 || true
    net_k sysctl -qw "net.ipv6.conf.$VETH_K.disable_ipv6=1" >/dev/null 2>&1 || true
    ip -n "$NS_K" addr add "$IP_K/24" dev "$VETH_K"
    ip -n "$NS_K" link set "$VETH_K" up
    ip -n "$NS_U" link set "$VETH_U" up
    local feat
    feat=$(net_k ethtool -k "$VETH_K" 2>/dev/null | grep -E '^(tx-checksumming|generic-segmentation-offload|tcp-segmentation-offload):' | grep -c ': on' || true)
    [ "$feat" = 0 ] || net_log "warning: some offloads still on at $VETH_K"
}

# Set both veth MTUs.
net_set_mtu() {
    ip -n "$NS_K" link set "$VETH_K" mtu "$1"
    ip -n "$NS_U" link set "$VETH_U" mtu "$1"
    if [ "$NET_RELAY" = 1 ]; then
        ip -n "$NS_R" link set "$VETH_RK" mtu "$1"
        ip -n "$NS_R" link set "$VETH_RU" mtu "$1"
    fi
}

# Forget the kernel peer's ARP entry for ustack (so each ustackd run answers ARP anew).
net_flush_neigh() { ip -n "$NS_K" neigh flush dev "$VETH_K" 2>/dev/null || true; }

# ---------------------------------------------------------------- ustackd

# ustackd_start DEV [FLAGS...]: start ustackd in the ustack namespace, wait for "ready".
# Uses U_CORES (default 0), U_MTU, U_GW, U_IP6, U_GW6.
ustackd_start() {
    local dev=$1
    shift
    net_require_ustackd
    [ -z "$USTACKD_PID" ] || net_fail "ustackd_start: ustackd already running"
    USTACKD_N=$((USTACKD_N + 1))
    USTACKD_OUT="$NET_TMPD/ustackd.$USTACKD_N.out"
    USTACKD_ERR="$NET_TMPD/ustackd.$USTACKD_N.err"
    local -a envs=("USTACK_DEV=$dev" "USTACK_IP=$IP_U/24" "USTACK_CORES=$U_CORES")
    [ -n "$U_MTU" ] && envs+=("USTACK_MTU=$U_MTU")
    [ -n "$U_GW" ] && envs+=("USTACK_GW=$U_GW")
    [ -n "$U_IP6" ] && envs+=("USTACK_IP6=$U_IP6")
    [ -n "$U_GW6" ] && envs+=("USTACK_GW6=$U_GW6")
    [ -n "${NET_USTACK_EAL:-}" ] && envs+=("USTACK_EAL=$NET_USTACK_EAL")
    [ -n "${NET_USTACK_LOG:-}" ] && envs+=("USTACK_LOG=$NET_USTACK_LOG")
    # shellcheck disable=SC2206 # blank-separated NAME=VALUE words, no blanks inside
    [ -n "${U_STACKD_ENV:-}" ] && envs+=($U_STACKD_ENV)
    local bpffs=${NET_BPFFS:-1}
    net_log "start ustackd: ${envs[*]} $*"
    # `ip netns exec` gives the command a private mount namespace with a fresh /sys; mount a
    # bpffs there for libxdp (private to this process, gone with it). It execs, so $! is
    # ustackd's own pid.
    # shellcheck disable=SC2016
    ip netns exec "$NS_U" sh -c '
        [ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null
        shift
        exec env "$@"' sh "$bpffs" "${envs[@]}" "$USTACKD" "$@" \
        >"$USTACKD_OUT" 2>"$USTACKD_ERR" </dev/null &
    USTACKD_PID=$!
    NET_USTACKD_PIDS="$NET_USTACKD_PIDS $USTACKD_PID"
    local i
    for ((i = 0; i < NET_READY_SECS * 10; i++)); do
        if grep -q '^ustackd: ready' "$USTACKD_OUT" 2>/dev/null; then
            net_log "ustackd ready (pid $USTACKD_PID) after $((i / 10)).$((i % 10)) s"
            return 0
        fi
        if ! proc_alive "$USTACKD_PID"; then
            local rc=0
            wait "$USTACKD_PID" || rc=$?
            USTACKD_PID=""
            net_fail "ustackd ($dev) exited with status $rc before ready: $(head -c 300 "$USTACKD_ERR" | tr '\n' ' ')"
        fi
        sleep 0.1
    done
    net_fail "ustackd ($dev) not ready within $NET_READY_SECS s"
}

# ustackd_alive: true while the current ustackd runs.
ustackd_alive() { [ -n "$USTACKD_PID" ] && proc_alive "$USTACKD_PID"; }

net__count_ends() { grep -c '^ustackd: stats end' "$USTACKD_OUT" 2>/dev/null || true; }

# ustackd_stats VAR: SIGUSR1, wait (10 s) for a new "stats end", store that block's core
# lines in a file whose path goes into VAR.
ustackd_stats() {
    local __var=$1 before i f
    ustackd_alive || net_fail "ustackd is not running (stats requested)"
    before=$(net__count_ends)
    kill -USR1 "$USTACKD_PID"
    for ((i = 0; i < 100; i++)); do
        [ "$(net__count_ends)" -gt "$before" ] && break
        ustackd_alive || net_fail "ustackd died after SIGUSR1"
        sleep 0.1
    done
    [ "$(net__count_ends)" -gt "$before" ] || net_fail "no 'ustackd: stats end' within 10 s of SIGUSR1"
    f="$NET_TMPD/stats.$USTACKD_N.$((before + 1))"
    net__stats_block "$before" >"$f"
    [ -s "$f" ] || net_fail "SIGUSR1 printed no 'ustackd: stats core=' lines"
    printf -v "$__var" '%s' "$f"
}

# Core lines of the block ended by the (N+1)-th "stats end" line of the current output.
net__stats_block() {
    awk -v n="$1" '
        /^ustackd: stats end/ { c++; if (c > n) exit; blk = ""; next }
        /^ustackd: stats core=/ { blk = blk $0 "\n" }
        END { printf "%s", blk }' "$USTACKD_OUT"
}

# stat_cores FILE: the core ids present, each once (a core has a second line, of the
# shared-memory server's counters, when ustackd serves LD_PRELOAD programs).
stat_cores() { sed -n 's/^ustackd: stats core=\([0-9]*\).*/\1/p' "$1" | sort -un; }

# ustackd prints only the counters that are not zero: an absent counter reads as 0.

# stat_get FILE CORE NAME: one counter of one core (0 if not reported).
stat_get() {
    local v
    v=$(awk -v c="$2" -v k="$3" '
        $3 == "core=" c { for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' "$1")
    case $v in
        '') echo 0 ;;
        *[!0-9]*) net_fail "counter $3=$v on core $2 is not a number" ;;
        *) echo "$v" ;;
    esac
}

# stat_sum FILE NAME...: sum of the named counters over all cores.
stat_sum() {
    local f=$1 sum=0 c k v
    shift
    for c in $(stat_cores "$f"); do
        for k in "$@"; do
            v=$(stat_get "$f" "$c" "$k")
            sum=$((sum + v))
        done
    done
    echo "$sum"
}

# stat_names FILE: the counter names reported (union over cores).
stat_names() {
    awk '{ for (i = 4; i <= NF; i++) { split($i, kv, "="); print kv[1] } }' "$1" | sort -u
}

# ustackd_stop: SIGTERM, bounded wait, exit status must be 0 and final stats printed.
ustackd_stop() {
    local pid=$USTACKD_PID rc=0 i before
    [ -n "$pid" ] || return 0
    ustackd_alive || {
        wait "$pid" || rc=$?
        USTACKD_PID=""
        net_fail "ustackd had already exited (status $rc)"
    }
    before=$(net__count_ends)
    kill -TERM "$pid"
    for ((i = 0; i < NET_STOP_SECS * 10; i++)); do
        proc_alive "$pid" || break
        sleep 0.1
    done
    if proc_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        USTACKD_PID=""
        net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
        net_fail "ustackd did not exit within $NET_STOP_SECS s of SIGTERM"
    fi
    wait "$pid" || rc=$?
    USTACKD_PID=""
    # A killed AF_XDP user leaves its XDP program attached; make sure the next run starts clean.
    net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
    [ "$rc" = 0 ] || net_fail "ustackd exited with status $rc after SIGTERM"
    [ "$(net__count_ends)" -gt "$before" ] || net_fail "ustackd printed no final stats on SIGTERM"
}

# The stats printed at SIGTERM (call after ustackd_stop): VAR gets a file.
ustackd_final_stats() {
    local __var=$1 n f
    n=$(net__count_ends)
    [ "$n" -gt 0 ] || net_fail "no final stats"
    f="$NET_TMPD/stats.$USTACKD_N.final"
    net__stats_block $((n - 1)) >"$f"
    printf -v "$__var" '%s' "$f"
}

# ---------------------------------------------------------------- data helpers

# make_random FILE BYTES
make_random() { head -c "$2" /dev/urandom >"$1"; }

# make_source_pattern FILE BYTES: byte i = i % 251 (what --source sends).
make_source_pattern() {
    local f=$1 n=$2 i period="$NET_TMPD/period.251"
    : >"$period"
    for ((i = 0; i < 251; i++)); do
        # shellcheck disable=SC2059
        printf "\\$(printf '%03o' "$i")" >>"$period"
    done
    cp "$period" "$f.tmp"
    while [ "$(stat -c %s "$f.tmp")" -lt "$n" ]; do
        cat "$f.tmp" "$f.tmp" >"$f.tmp2"
        mv "$f.tmp2" "$f.tmp"
    done
    head -c "$n" "$f.tmp" >"$f"
    rm -f "$f.tmp"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
fsize() { stat -c %s "$1"; }

# ---------------------------------------------------------------- nginx

# ngx_prefix: a private nginx prefix for $NGINX at $NET_TMPD/nginx. Sets PREFIX (with www/
# and tmp/), NGX_GROUP (the group the `nobody` workers run as), TEMP_PATHS (temp path
# directives, inside the prefix, for the modules this nginx has, not Debian's
# /var/lib/nginx) and NGX_ARGS (-p, -c, and -e where nginx takes it).
ngx_prefix() {
    local m ngx_v
    PREFIX="$NET_TMPD/nginx"
    mkdir -p "$PREFIX/www" "$PREFIX/tmp"
    NGX_GROUP=$(getent group nogroup >/dev/null && echo nogroup || echo nobody)
    ngx_v=$("$NGINX" -V 2>&1)
    TEMP_PATHS=""
    for m in client_body proxy fastcgi uwsgi scgi; do
        if [ "$m" != client_body ] && grep -q -- "--without-http_${m}_module" <<<"$ngx_v"; then continue; fi
        TEMP_PATHS="$TEMP_PATHS    ${m}_temp_path $PREFIX/tmp/$m;
"
    done
    NGX_ARGS=(-p "$PREFIX" -c "$PREFIX/nginx.conf")
    if "$NGINX" -h 2>&1 | grep -q -- '^ *-e '; then NGX_ARGS+=(-e "$PREFIX/error.log"); fi
}

# The http-level directives for serving the test files in bulk (html and bin types, no
# access log, sendfile, long keep-alive), for ngx_conf's HTTP.
# shellcheck disable=SC2034 # used by the tests that source this file
NGX_STATIC='    types {
        text/html html;
        application/octet-stream bin;
    }
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;'

# ngx_conf CONNS RLIMIT HTTP SERVER: writes $PREFIX/nginx.conf (after ngx_prefix): one
# worker under a master in the foreground, pid and error log in the prefix, CONNS
# worker_connections, worker_rlimit_nofile RLIMIT (none when empty: it sets the workers' fd
# limit, hence the size of libustack's fd table), the http-level directives HTTP (e.g.
# NGX_STATIC) and one server with the directives SERVER serving $PREFIX/www. HTTP and
# SERVER are lines indented as they stand in the file.
ngx_conf() {
    local rlimit=""
    [ -z "$2" ] || rlimit="worker_rlimit_nofile $2;
"
    cat >"$PREFIX/nginx.conf" <<EOF
user nobody $NGX_GROUP;
worker_processes 1;
${rlimit}daemon off;
master_process on;
pid $PREFIX/nginx.pid;
error_log $PREFIX/error.log notice;
events {
    worker_connections $1;
}
http {
$3
$TEMP_PATHS
    server {
$4
        root $PREFIX/www;
        index index.html;
    }
}
EOF
}

# ---------------------------------------------------------------- preloaded programs

# u_env KIND TAG: U_ENV, the environment of a program under libustack.so on the ustack side
# (its spawned ustackd's output goes to $NET_TMPD/stackd.TAG.log, which also becomes the log
# shown on failure). LIBUSTACK defaults to build/libustack.so.
U_ENV=()
u_env() {
    local kind=$1 tag=$2
    : "${LIBUSTACK:=$NET_ROOT/build/libustack.so}"
    USTACKD_OUT="$NET_TMPD/stackd.$tag.log"
    USTACKD_ERR=""
    USTACKD_PID=""
    U_ENV=("LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$kind")" "USTACK_IP=$IP_U/24"
        "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT")
    [ -n "${NET_USTACK_EAL:-}" ] && U_ENV+=("USTACK_EAL=$NET_USTACK_EAL")
    [ -n "${NET_USTACK_LOG:-}" ] && U_ENV+=("USTACK_LOG=$NET_USTACK_LOG")
    return 0
}

# u_exec ENV... CMD...: run in the ustack namespace. As ustackd_start, a private bpffs for
# libxdp in ip-netns-exec's mount namespace, which the spawned ustackd inherits.
# shellcheck disable=SC2016
U_SH='[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift; exec env "$@"'
u_exec() { ip netns exec "$NS_U" sh -c "$U_SH" sh "${NET_BPFFS:-1}" "$@"; }

# u_bg ENV... CMD...: the same in the background; U_BG is the program's pid (ip, sh and env
# exec), registered for teardown. Redirections apply to the caller's u_bg line as a whole.
U_BG=""
u_bg() {
    ip netns exec "$NS_U" sh -c "$U_SH" sh "${NET_BPFFS:-1}" "$@" &
    U_BG=$!
    net_bg "$U_BG"
}

# u_stackds: the ustackd processes of the ustack namespace.
u_stackds() {
    local p
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ustackd ] && echo "$p"
    done
    return 0
}

# u_no_stackd: true when no ustackd runs in the ustack namespace (a wait_for condition).
# shellcheck disable=SC2317
u_no_stackd() { [ -z "$(u_stackds)" ]; }

# u_note_stackd: remember the namespace's ustackd (SIGUSR1 statistics on failure, its DPDK
# runtime directory at teardown) in USTACKD_PID.
u_note_stackd() {
    local p
    p=$(u_stackds | head -n 1)
    [ -n "$p" ] || return 0
    USTACKD_PID=$p
    case " $NET_USTACKD_PIDS " in *" $p "*) ;; *) NET_USTACKD_PIDS="$NET_USTACKD_PIDS $p" ;; esac
}

# stop_bg PID: SIGTERM, wait (bounded), reap.
stop_bg() {
    net__kill_pid "$1" 5
    wait "$1" 2>/dev/null || true
}

# wait_listen PID PORT: true once the kernel side can connect to IP_U:PORT, false when
# the program PID has exited or after 20 s.
wait_listen() {
    local pid=$1 port=$2 end=$(($(ms_now) + 20000))
    while proc_alive "$pid"; do
        net_k nc -z -w 1 "$IP_U" "$port" 2>/dev/null && return 0
        [ "$(ms_now)" -lt "$end" ] || return 1
        sleep 0.1
    done
    return 1
}
