#!/bin/bash
# bench/veth.sh - ustackd against the kernel's own TCP over one veth pair, in the same run.
#
#   netns C (client, kernel TCP)                 netns S (server side)
#   veth ubc 198.18.78.1/24 (+ .100-.163)  <-->  veth ubs: either ustackd on it through
#   loadgen pinned to CPU 0                      net_af_xdp (198.18.78.2, no kernel address)
#                                                or the kernel (198.18.78.2/24) with kserve
#
# Both servers offer echo (7), discard (9) and source (19) and get the same CPU (1 by
# default). Runs alternate ustack, kernel, ustack, kernel ... for every scenario, each with a
# fresh server. Per run: the loadgen result, whole-machine CPU time from /proc/stat
# (user+nice+system+irq+softirq) and the server process's own CPU time. The table shows the
# median over rounds; bench/results/<date>-<host>-veth.json keeps every raw run.
#
# Usage (root): bench/veth.sh [options]
#   --rounds N          ustack/kernel pairs per scenario (default 2)
#   --seconds S         length of each measured run (default 5)
#   --server-cores L    1 (default): both servers on CPU 1, loadgen on CPU 0;
#                       0,1: ustackd on two stack cores, kserve --threads 2, loadgen unpinned
#   --retries N         repeat a disturbed run (below) up to N times (default 2)
#   --quiet-wait S      before each run, wait up to S s (default 60) for the machine to be quiet
#   --quick             smoke test: 1 round of 2 s
#   --only LIST         comma-separated scenarios (rr1,rr32,crr32,send1,send4,recv1)
#   --perf              perf record -g on ustackd during its first rr1 run (report in results)
#   --ustack-env V=X    extra ustackd setting (USTACK_RCVBUF=4M, ...), repeatable; for
#                       experiments: the default run uses ustackd's defaults
#   --out FILE          JSON output (default bench/results/<date>-<host>-veth.json)
# Disturbed runs: on a shared machine other processes take CPU from the servers and from the
# pinned loadgen (on this project's VM a pinned task was seen waiting 10-20 s for CPU 0). A
# run during which processes outside this script used more than 10 % of a CPU, or loadgen
# waited over 30 % of the run for its CPU, or which took 2 s longer than asked, is
# "disturbed": it is repeated, kept in the JSON, and the table counts the ones it had to use.
# Environment: USTACKD, KSERVE, LOADGEN (binaries), VETH_KEEP=1 (keep the raw run files).
# Exit status: 0 if every run succeeded, 1 if any failed (failures are in the table and JSON).

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USTACKD=${USTACKD:-$ROOT/build/ustackd}
KSERVE=${KSERVE:-$ROOT/build/bench/kserve}
LOADGEN=${LOADGEN:-$ROOT/build/bench/loadgen}

# Nothing from the caller's environment configures ustackd behind the benchmark's back.
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

U_EXTRA=()
ROUNDS=2 SECS=5 RETRIES=2 QUIET_WAIT=60 SCORES=1 ONLY="rr1,rr32,crr32,send1,send4,recv1" PERF=0 OUT=""
ARGS="$*"
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --seconds) SECS=$2; shift ;;
        --retries) RETRIES=$2; shift ;;
        --quiet-wait) QUIET_WAIT=$2; shift ;;
        --server-cores) SCORES=$2; shift ;;
        --quick) ROUNDS=1 SECS=2 ;;
        --only) ONLY=$2; shift ;;
        --perf) PERF=1 ;;
        --ustack-env)
            case $2 in USTACK_[A-Z0-9_]*=*) U_EXTRA+=("$2") ;; *) echo "veth.sh: --ustack-env wants USTACK_NAME=VALUE" >&2; exit 2 ;; esac
            shift ;;
        --out) OUT=$2; shift ;;
        -h | --help) sed -n '2,/^# Exit status/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "veth.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $ROUNDS in '' | *[!0-9]* | 0) echo "veth.sh: bad --rounds '$ROUNDS'" >&2; exit 2 ;; esac
case $SECS in '' | *[!0-9]* | 0) echo "veth.sh: bad --seconds '$SECS'" >&2; exit 2 ;; esac
case $RETRIES in '' | *[!0-9]*) echo "veth.sh: bad --retries '$RETRIES'" >&2; exit 2 ;; esac
case $QUIET_WAIT in '' | *[!0-9]*) echo "veth.sh: bad --quiet-wait '$QUIET_WAIT'" >&2; exit 2 ;; esac
CLK_TCK=$(getconf CLK_TCK)
case $SCORES in
    1) LG_PIN=(taskset -c 0) SRV_PIN=(taskset -c 1) KTHREADS=1 ;;
    0,1) LG_PIN=() SRV_PIN=(taskset -c "0,1") KTHREADS=2 ;;
    *) echo "veth.sh: --server-cores must be 1 or 0,1" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "veth.sh: must run as root" >&2; exit 2; }
for t in ip ethtool taskset timeout python3; do
    command -v $t >/dev/null || { echo "veth.sh: '$t' not found" >&2; exit 2; }
done
for b in "$USTACKD" "$KSERVE" "$LOADGEN"; do
    [ -x "$b" ] || { echo "veth.sh: $b not built (make all)" >&2; exit 2; }
done

NS_C="ubv-c-$$" NS_S="ubv-s-$$" V_C=ubc V_S=ubs
IP_C=198.18.78.1 IP_S=198.18.78.2 BIND_BASE=198.18.78.100 BIND_N=64
P_ECHO=7 P_DISC=9 P_SRC=19
TMPD=$(mktemp -d /tmp/bench-veth.XXXXXX)
SRV_PID="" PERF_PID="" FAILS=0

log() { printf '[veth] %s\n' "$*" >&2; }
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) [ZX]' "/proc/$1/stat" 2>/dev/null; }

# Bounded stop of one of our processes: SIGTERM, up to $2 s, then SIGKILL. Status in STOP_RC.
STOP_RC=""
stop_pid() {
    local pid=$1 secs=$2 i
    STOP_RC=0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; STOP_RC="killed after $secs s"; return
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
}

# shellcheck disable=SC2317  # called by the traps
cleanup() {
    trap - EXIT INT TERM
    [ -n "$PERF_PID" ] && stop_pid "$PERF_PID" 5
    [ -n "$SRV_PID" ] && stop_pid "$SRV_PID" 5
    for ns in $NS_C $NS_S; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    if [ "${VETH_KEEP:-0}" = 1 ]; then echo "[veth] kept $TMPD" >&2; else rm -rf "$TMPD"; fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM
exec {SLEEP_FD}<> <(:)   # `read -t N -u $SLEEP_FD` sleeps without a fork

# Private copies: a rebuild during the run must not mix binaries between runs. The names
# differ from the originals so that someone else's `pkill ustackd` on this shared machine
# cannot stop a measured server (it happened once during development).
BINARIES=$(for b in "$USTACKD" "$KSERVE" "$LOADGEN"; do echo "$b $(sha256sum <"$b" | cut -c1-12)"; done | paste -sd ';')
mkdir "$TMPD/bin" && cp "$USTACKD" "$TMPD/bin/u-stack-d" && cp "$KSERVE" "$TMPD/bin/k-serve" &&
    cp "$LOADGEN" "$TMPD/bin/load-gen" || exit 1
USTACKD=$TMPD/bin/u-stack-d KSERVE=$TMPD/bin/k-serve LOADGEN=$TMPD/bin/load-gen

# ------------------------------------------------------------------ topology
ip route show type blackhole | grep -q '198\.18\.0\.0/15' || ip route add blackhole 198.18.0.0/15
ip netns add "$NS_C" && ip netns add "$NS_S" || exit 1
ip -n "$NS_C" link add "$V_C" type veth peer name "$V_S" netns "$NS_S" || exit 1
for ns in "$NS_C" "$NS_S"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
    ip -n "$ns" link set lo up
done
# Same MTU-sized frames for both servers: no checksum offload, GSO, GRO or TSO on either end.
ip netns exec "$NS_C" ethtool -K "$V_C" tx off rx off gso off gro off tso off >/dev/null 2>&1
ip netns exec "$NS_S" ethtool -K "$V_S" tx off rx off gso off gro off tso off >/dev/null 2>&1
{
    echo "addr add $IP_C/24 dev $V_C"
    for ((i = 0; i < BIND_N; i++)); do echo "addr add 198.18.78.$((100 + i))/24 dev $V_C"; done
} | ip -n "$NS_C" -batch - || exit 1
ip -n "$NS_C" link set "$V_C" up && ip -n "$NS_S" link set "$V_S" up || exit 1
OFFLOADS=$(ip netns exec "$NS_C" ethtool -k "$V_C" 2>/dev/null |
    grep -E '^(tx-checksumming|rx-checksumming|generic-segmentation-offload|generic-receive-offload|tcp-segmentation-offload):' | tr -s ' \t' ' ' | paste -sd ';')

# ------------------------------------------------------------------ servers
U_ENV=("USTACK_DEV=net_af_xdp0,iface=$V_S" "USTACK_IP=$IP_S/24" "USTACK_CORES=$SCORES" "${U_EXTRA[@]}")
U_CMD=("${SRV_PIN[@]}" "$USTACKD" --echo "$P_ECHO" --discard "$P_DISC" --source "$P_SRC")
K_CMD=("${SRV_PIN[@]}" "$KSERVE" --echo "$P_ECHO" --discard "$P_DISC" --source "$P_SRC" --threads "$KTHREADS")

# start_server SIDE DIR: start it in S, wait (30 s) for its ready line. Sets SRV_PID.
start_server() {
    local side=$1 d=$2 i pat
    ip -n "$NS_S" addr flush dev "$V_S"
    ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
    ip -n "$NS_C" neigh flush all; ip -n "$NS_S" neigh flush all
    if [ "$side" = ustack ]; then
        pat='^ustackd: ready'
        echo "ip netns exec S env ${U_ENV[*]} ${U_CMD[*]}" >"$d/server.cmd"
        # `ip netns exec` gives a private /sys: mount a bpffs there for libxdp. All exec, so
        # $! is the server's own pid.
        # shellcheck disable=SC2016
        ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; exec env "$@"' sh \
            "${U_ENV[@]}" "${U_CMD[@]}" >"$d/server.out" 2>"$d/server.err" </dev/null &
    else
        pat='^kserve: ready'
        ip -n "$NS_S" addr add "$IP_S/24" dev "$V_S"
        echo "ip -n S addr add $IP_S/24 dev $V_S; ip netns exec S ${K_CMD[*]}" >"$d/server.cmd"
        ip netns exec "$NS_S" "${K_CMD[@]}" >"$d/server.out" 2>"$d/server.err" </dev/null &
    fi
    SRV_PID=$!
    for ((i = 0; i < 300; i++)); do
        grep -q "$pat" "$d/server.out" 2>/dev/null && return 0
        alive "$SRV_PID" || break
        sleep 0.1
    done
    echo "server not ready: $(alive "$SRV_PID" && echo 'no ready line in 30 s' || echo exited)" >"$d/fail"
    return 1
}

# stop_server SIDE DIR: SIGTERM (15 s bound); ustackd must exit 0.
stop_server() {
    local side=$1 d=$2 rc
    [ -n "$SRV_PID" ] || return 0
    stop_pid "$SRV_PID" 15
    rc=$STOP_RC SRV_PID=""
    echo "$rc" >"$d/server.exit"
    if [ "$side" = ustack ]; then
        ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
        [ "$rc" = 0 ] || echo "ustackd exit status $rc after SIGTERM" >>"$d/fail"
    else
        ip -n "$NS_S" addr flush dev "$V_S"
    fi
}

cpu_snap() { grep '^cpu' /proc/stat; }
# Kernel SNMP counters of both namespaces (the client's TCP in C, the kernel server's in S),
# both veth ends' counters (drops, XDP) and the per-CPU backlog drops.
nstat_snap() {
    { ip netns exec "$NS_C" nstat -asz 2>/dev/null | sed -n 's/^\([A-Za-z]*\) *\([0-9]*\).*/C.\1 \2/p'
      ip netns exec "$NS_S" nstat -asz 2>/dev/null | sed -n 's/^\([A-Za-z]*\) *\([0-9]*\).*/S.\1 \2/p'
      ip netns exec "$NS_C" ethtool -S "$V_C" 2>/dev/null | sed -n 's/^ *\([^: ]*\): *\([0-9][0-9]*\)$/C.veth.\1 \2/p'
      ip netns exec "$NS_S" ethtool -S "$V_S" 2>/dev/null | sed -n 's/^ *\([^: ]*\): *\([0-9][0-9]*\)$/S.veth.\1 \2/p'
      ip netns exec "$NS_C" sh -c "cd /sys/class/net/$V_C/statistics && grep . rx_dropped tx_dropped" 2>/dev/null | sed 's/^\(.*\):/C.link.\1 /'
      ip netns exec "$NS_S" sh -c "cd /sys/class/net/$V_S/statistics && grep . rx_dropped tx_dropped" 2>/dev/null | sed 's/^\(.*\):/S.link.\1 /'
      local n=0 _p b c _rest
      while read -r _p b c _rest; do
          echo "softnet.cpu$n.dropped $((16#$b))"; echo "softnet.cpu$n.squeezed $((16#$c))"; n=$((n + 1))
      done </proc/net/softnet_stat
    } >"$1"
}
proc_snap() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12, $13}'; }  # utime stime

# ------------------------------------------------------------------ one run
# scenario -> mode port conns [extra loadgen args]
scen() {
    case $1 in
        rr1) echo "rr $P_ECHO 1 --size 64" ;;
        rr32) echo "rr $P_ECHO 32 --size 64" ;;
        crr32) echo "crr $P_ECHO 32 --size 64 --bind-base $BIND_BASE --bind-count $BIND_N" ;;
        send1) echo "bulk-send $P_DISC 1" ;;
        send4) echo "bulk-send $P_DISC 4" ;;
        recv1) echo "bulk-recv $P_SRC 1" ;;
        *) return 1 ;;
    esac
}

# CPU ticks used since boot by every process outside this script's own tree (kernel threads
# excluded: softirq work done in ksoftirqd is the run's own), counting the children they
# reaped. Over a run it tells whether other work on the machine competed with the benchmark.
cat >"$TMPD/other_cpu.py" <<'PYEOF'
import os, sys
me, ppid, ticks = int(sys.argv[1]), {}, {}
for p in os.listdir("/proc"):
    if not p.isdigit(): continue
    try:
        with open(f"/proc/{p}/stat") as f: st = f.read()
    except OSError: continue
    f = st[st.rindex(")") + 2:].split()
    pid = int(p); ppid[pid] = int(f[1])
    if int(f[6]) & 0x00200000: continue  # PF_KTHREAD in the flags
    ticks[pid] = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
def ours(pid):
    while pid > 1:
        if pid == me: return True
        pid = ppid.get(pid, 0)
    return False
print(sum(t for pid, t in ticks.items() if not ours(pid)))
PYEOF
other_snap() { python3 "$TMPD/other_cpu.py" $$ 2>/dev/null || echo 0; }
# Sum of run_delay (ns waiting on a run queue) over a process's threads.
run_delay() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $2 } END { printf "%.0f\n", s }'; }

PERF_DONE=0
# run_attempt SCENARIO ROUND SIDE DIR: one measured run with a fresh server.
run_attempt() {
    local sc=$1 round=$2 side=$3 d=$4 mode port conns rc lp t i f a st lim dl=0
    local -a extra
    mkdir -p "$d"
    read -ra extra <<<"$(scen "$sc")"
    mode=${extra[0]} port=${extra[1]} conns=${extra[2]}
    extra=("${extra[@]:3}")
    printf 'scenario=%s\nround=%s\nside=%s\nmode=%s\nconns=%s\n' "$sc" "$round" "$side" "$mode" "$conns" >"$d/meta"
    cat /proc/loadavg >"$d/loadavg"
    start_server "$side" "$d" || { stop_server "$side" "$d"; return; }
    # Warm-up (ARP, first connections), the same for both sides, not measured.
    if ! ip netns exec "$NS_C" timeout 20 "$LOADGEN" --mode rr --server "$IP_S" --port "$P_ECHO" \
        --conns 1 --max 100 --seconds 5 >"$d/warmup.out" 2>&1; then
        echo "warm-up failed: $(tail -n 2 "$d/warmup.out" | tr '\n' ' ')" >>"$d/fail"
        stop_server "$side" "$d"
        return
    fi
    local -a lg=("${LG_PIN[@]}" "$LOADGEN" --mode "$mode" --server "$IP_S" --port "$port"
        --conns "$conns" --seconds "$SECS" "${extra[@]}" --json)
    echo "ip netns exec C ${lg[*]}" >"$d/loadgen.cmd"
    if [ "$PERF" = 1 ] && [ "$PERF_DONE" = 0 ] && [ "$side" = ustack ] && [ "$sc" = rr1 ]; then
        PERF_DONE=1
        perf record -q -g -p "$SRV_PID" -o "$TMPD/perf.data" -- sleep $((SECS > 2 ? SECS - 1 : 1)) \
            >"$TMPD/perf.rec.out" 2>&1 &
        PERF_PID=$!
    fi
    nstat_snap "$d/nstat.before"
    other_snap >"$d/other.before"
    run_delay "$SRV_PID" >"$d/srv_delay.before"
    proc_snap "$SRV_PID" >"$d/srv.before"; cpu_snap >"$d/cpu.before"; date +%s.%N >"$d/t.before"
    # ip netns exec and taskset exec, so $! is loadgen itself: its run queue delay is sampled
    # while it runs (a pinned loadgen starved by other work is a disturbed run, not a result).
    ip netns exec "$NS_C" "${lg[@]}" >"$d/loadgen.json" 2>"$d/loadgen.err" &
    lp=$!
    # Sampled with shell builtins only (no fork), so the sampling takes no CPU from the run.
    lim=$(((SECS + 30) * 4))
    for ((i = 0; i < lim; i++)); do
        t=0
        for f in /proc/"$lp"/task/*/schedstat; do
            { read -r _ a _ <"$f"; } 2>/dev/null && t=$((t + a))
        done
        [ "$t" -gt 0 ] && dl=$t
        st=""; { read -r st <"/proc/$lp/stat"; } 2>/dev/null; st=${st##*) }; st=${st%% *}
        case $st in '' | Z | X) break ;; esac
        read -rt 0.25 -u "$SLEEP_FD"
    done
    if alive "$lp"; then kill -KILL "$lp" 2>/dev/null; echo "loadgen still running after $((SECS + 30)) s: killed" >>"$d/fail"; fi
    rc=0; wait "$lp" || rc=$?
    date +%s.%N >"$d/t.after"; cpu_snap >"$d/cpu.after"; proc_snap "$SRV_PID" >"$d/srv.after"
    run_delay "$SRV_PID" >"$d/srv_delay.after"
    other_snap >"$d/other.after"
    echo "$dl" >"$d/loadgen.run_delay"
    nstat_snap "$d/nstat.after"
    echo "$rc" >"$d/loadgen.rc"
    [ "$rc" = 0 ] || echo "loadgen exit $rc: $(tail -n 3 "$d/loadgen.err" | tr '\n' ' ')" >>"$d/fail"
    alive "$SRV_PID" || echo "server exited during the run" >>"$d/fail"
    if [ -n "$PERF_PID" ]; then wait "$PERF_PID"; PERF_PID=""; fi
    stop_server "$side" "$d"
}

# disturbed DIR: prints why the attempt in DIR was disturbed by other work, or nothing.
disturbed() {
    local d=$1 wall other lgd
    [ -s "$d/t.after" ] || return 0
    wall=$(awk -v a="$(cat "$d/t.before")" -v b="$(cat "$d/t.after")" 'BEGIN { printf "%d", (b - a) * 1000 }')
    other=$((($(cat "$d/other.after") - $(cat "$d/other.before")) * 1000 / CLK_TCK))
    lgd=$(($(cat "$d/loadgen.run_delay") / 1000000))
    # Thresholds: other processes used more than 10 % of one CPU over the run (an upper
    # bound: it includes children they reaped, whose CPU time may predate the run), or
    # loadgen waited more than 30 % of the run for its CPU (some waiting is the run's own:
    # ksoftirqd doing the veth's work on loadgen's CPU), or the run took 2 s longer than asked.
    [ "$other" -gt $((wall / 10)) ] && echo "other processes used up to ${other} ms CPU in ${wall} ms"
    [ "$lgd" -gt $((SECS * 300)) ] && echo "loadgen waited ${lgd} ms for its CPU"
    [ "$wall" -gt $(((SECS + 2) * 1000)) ] && echo "the run took ${wall} ms"
    return 0
}

# wait_quiet: wait (up to --quiet-wait seconds) for 2 s in which other processes used under
# 5 % of one CPU, so that attempts start on a quiet machine when there is one.
wait_quiet() {
    local t0=$SECONDS o1 o2
    while [ $((SECONDS - t0)) -lt "$QUIET_WAIT" ]; do
        o1=$(other_snap); read -rt 2 -u "$SLEEP_FD"; o2=$(other_snap)
        [ $(((o2 - o1) * 1000 / CLK_TCK)) -lt 100 ] && return 0
    done
    log "the machine was not quiet within $QUIET_WAIT s; running anyway"
}

# run_one SCENARIO ROUND SIDE: an attempt, repeated (up to --retries times) while other work
# on the machine disturbed it. Every attempt is kept in the results.
run_one() {
    local sc=$1 round=$2 side=$3 a d why
    for ((a = 1; a <= RETRIES + 1; a++)); do
        d="$TMPD/runs/$sc.$round.$side.$a"
        wait_quiet
        log "$sc round $round: $side$([ "$a" -gt 1 ] && echo " (attempt $a)")"
        run_attempt "$sc" "$round" "$side" "$d"
        why=$(disturbed "$d" | paste -sd ';')
        [ -n "$why" ] && echo "$why" >"$d/disturbed"
        if [ -s "$d/fail" ]; then
            log "FAILED: $(paste -sd ';' "$d/fail")${why:+ (disturbed: $why)}"
            tail -n 5 "$d/server.err" 2>/dev/null | grep -v '^libbpf\|^libxdp' | sed 's/^/    server: /' >&2
        fi
        [ -z "$why" ] && break
        log "disturbed by other work: $why"
    done
    [ -s "$d/fail" ] && FAILS=$((FAILS + 1))
    echo "$d" >>"$TMPD/final"
    return 0
}

# ------------------------------------------------------------------ main
for sc in ${ONLY//,/ }; do scen "$sc" >/dev/null || { echo "veth.sh: unknown scenario $sc" >&2; exit 2; }; done
LOAD_START=$(cat /proc/loadavg)
log "load average before the runs: $LOAD_START (other work on the machine skews every number)"
log "namespaces $NS_C/$NS_S, $ROUNDS round(s) of $SECS s, server cores $SCORES"
T0=$SECONDS
for sc in ${ONLY//,/ }; do
    for ((r = 1; r <= ROUNDS; r++)); do
        run_one "$sc" "$r" ustack
        run_one "$sc" "$r" kernel
    done
done
log "done in $((SECONDS - T0)) s"

PERF_TOP=""
if [ -s "$TMPD/perf.data" ]; then
    perf report -i "$TMPD/perf.data" --stdio --no-children -g none --sort dso,symbol --percent-limit 0.5 2>/dev/null |
        grep -E '^ +[0-9.]+%' | sed 's/[ -]*$//' | head -n 15 >"$TMPD/perf.top"
    PERF_TOP="$TMPD/perf.top"
fi

# ------------------------------------------------------------------ report
mkdir -p "$ROOT/bench/results"
[ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date +%Y%m%dT%H%M%S)-$(hostname -s)-veth.json"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT+dirty"
export TMPD OUT COMMIT BINARIES LOAD_START SECS ROUNDS SCORES OFFLOADS PERF_TOP
export CMDLINE="bench/veth.sh${ARGS:+ $ARGS}"
python3 - <<'EOF' || FAILS=$((FAILS + 1))
import json, os, platform, statistics, subprocess, glob

tmpd, hz = os.environ["TMPD"], os.sysconf("SC_CLK_TCK")
def rd(p, default=""):
    try:
        with open(p) as f: return f.read()
    except OSError: return default
def cpu(p):
    out = {}
    for line in rd(p).splitlines():
        f = line.split()
        v = [int(x) for x in f[1:]]
        out[f[0]] = {"busy": sum(v[i] for i in (0, 1, 2, 5, 6)) / hz, "idle": (v[3] + v[4]) / hz,
                     "softirq": v[6] / hz, "irq": v[5] / hz, "steal": v[7] / hz if len(v) > 7 else 0}
    return out
def cpu_delta(d):
    a, b = cpu(d + "/cpu.before"), cpu(d + "/cpu.after")
    return {k: {f: round(b[k][f] - a[k][f], 3) for f in b[k]} for k in b if k in a}

order = ["rr1", "rr32", "crr32", "send1", "send4", "recv1"]
label = {"rr1": "rr, 1 conn, 64 B (trans/s)", "rr32": "rr, 32 conns, 64 B (trans/s)",
         "crr32": "crr, 32 concurrent (conn/s)", "send1": "bulk-send, 1 stream (Gbit/s)",
         "send4": "bulk-send, 4 streams (Gbit/s)", "recv1": "bulk-recv, 1 stream (Gbit/s)"}
runs = []
final = set(rd(tmpd + "/final").split())
for d in sorted(glob.glob(tmpd + "/runs/*")):
    meta = dict(l.split("=", 1) for l in rd(d + "/meta").split())
    r = {"scenario": meta["scenario"], "round": int(meta["round"]), "side": meta["side"],
         "attempt": int(d.rsplit(".", 1)[1]), "final": d in final,
         "disturbed": rd(d + "/disturbed").strip() or None,
         "server_cmd": rd(d + "/server.cmd").strip(), "loadgen_cmd": rd(d + "/loadgen.cmd").strip(),
         "failure": rd(d + "/fail").strip() or None, "server_exit": rd(d + "/server.exit").strip(),
         "loadavg_before": rd(d + "/loadavg").strip()}
    try: r["loadgen"] = json.loads(rd(d + "/loadgen.json"))
    except ValueError: r["loadgen"] = None
    if os.path.exists(d + "/cpu.after"):
        r["wall_s"] = round(float(rd(d + "/t.after")) - float(rd(d + "/t.before")), 3)
        r["cpu"] = cpu_delta(d)
        r["other_processes_cpu_s"] = round((int(rd(d + "/other.after") or 0) - int(rd(d + "/other.before") or 0)) / hz, 3)
        r["loadgen_run_delay_s"] = round(int(rd(d + "/loadgen.run_delay") or 0) / 1e9, 3)
        try: r["server_run_delay_s"] = round((int(rd(d + "/srv_delay.after")) - int(rd(d + "/srv_delay.before"))) / 1e9, 3)
        except ValueError: pass
        sb, sa = rd(d + "/srv.before").split(), rd(d + "/srv.after").split()
        if len(sb) == 2 and len(sa) == 2:
            r["server_cpu_s"] = round((int(sa[0]) + int(sa[1]) - int(sb[0]) - int(sb[1])) / hz, 3)
    lg = r["loadgen"]
    if lg and not r["failure"]:
        if meta["mode"] in ("bulk-send", "bulk-recv"):
            r["value"], r["units"] = lg["gbps"], lg["bytes"] / 1e9   # per GB
        elif meta["mode"] == "crr":
            r["value"], r["units"] = lg["cps"], lg["connections"]
        else:
            r["value"], r["units"] = lg["tps"], lg["transactions"]
        if r["units"] > 0:
            r["machine_cpu_per_unit"] = r["cpu"]["cpu"]["busy"] / r["units"]
            if "server_cpu_s" in r:
                r["server_cpu_per_unit"] = r["server_cpu_s"] / r["units"]
        r["loadgen_cpu_s"] = round(lg["cpu_user_s"] + lg["cpu_sys_s"], 3)
    def counters(p):
        out = {}
        for l in rd(p).splitlines():
            f = l.split()
            if len(f) == 2 and f[1].isdigit(): out[f[0]] = int(f[1])
        return out
    na, nb = counters(d + "/nstat.after"), counters(d + "/nstat.before")
    r["counters_delta"] = {k: v - nb.get(k, 0) for k, v in na.items() if v != nb.get(k, 0)}
    srv_err = rd(d + "/server.err").splitlines()
    srv_out = rd(d + "/server.out").splitlines()
    r["server_stats"] = [l for l in srv_out if l.startswith("ustackd: stats")][-8:]
    if r["failure"]:
        r["server_stderr_tail"] = srv_err[-20:]
        r["server_stdout_tail"] = srv_out[-20:]
    runs.append(r)

# The median is over the successful runs that were not disturbed (any attempt of any round);
# a side with none falls back to its disturbed successful runs, and the table says so.
for r in runs: r["used"] = False
for sc in set(r["scenario"] for r in runs):
    for side in ("ustack", "kernel"):
        ok = [r for r in runs if r["scenario"] == sc and r["side"] == side and "value" in r]
        clean = [r for r in ok if not r["disturbed"]]
        for r in (clean or ok): r["used"] = True
def med(side, sc, key):
    v = [r[key] for r in runs if r["used"] and r["side"] == side and r["scenario"] == sc and key in r]
    return statistics.median(v) if v else None
def nused(side, sc):
    return sum(1 for r in runs if r["used"] and r["side"] == side and r["scenario"] == sc)
def nfail(side, sc):
    return sum(1 for r in runs if r["final"] and r["side"] == side and r["scenario"] == sc and r["failure"])
def ndist(side, sc):
    return sum(1 for r in runs if r["used"] and r["side"] == side and r["scenario"] == sc and r["disturbed"])
def fmt(v, sc):
    if v is None: return "-"
    return f"{v:.2f}" if sc.startswith(("send", "recv")) else f"{v:,.0f}"
def fcpu(v, sc):
    if v is None: return "-"
    return f"{v:.2f}" if sc.startswith(("send", "recv")) else f"{v * 1e6:.1f} us"

summary, rows = [], []
for sc in [s for s in order if any(r["scenario"] == s for r in runs)]:
    u, k = med("ustack", sc, "value"), med("kernel", sc, "value")
    s = {"scenario": sc, "label": label[sc], "ustack": u, "kernel": k,
         "ratio": (u / k) if u and k else None,
         "ustack_fail": nfail("ustack", sc), "kernel_fail": nfail("kernel", sc)}
    for side in ("ustack", "kernel"):
        s[side + "_machine_cpu_per_unit"] = med(side, sc, "machine_cpu_per_unit")
        s[side + "_server_cpu_per_unit"] = med(side, sc, "server_cpu_per_unit")
    summary.append(s)
    s["ustack_disturbed"], s["kernel_disturbed"] = ndist("ustack", sc), ndist("kernel", sc)
    s["ustack_runs"], s["kernel_runs"] = nused("ustack", sc), nused("kernel", sc)
    fl = lambda side: f" [{s[side + '_runs']}" + (" disturbed" if s[side + "_disturbed"] else "") + "]" + \
        (f" ({s[side + '_fail']} failed)" if s[side + "_fail"] else "")
    rows.append([label[sc], fmt(u, sc) + fl("ustack"), fmt(k, sc) + fl("kernel"),
                 f"{s['ratio']:.2f}x" if s["ratio"] else "-",
                 fcpu(s["ustack_machine_cpu_per_unit"], sc), fcpu(s["kernel_machine_cpu_per_unit"], sc),
                 fcpu(s["ustack_server_cpu_per_unit"], sc), fcpu(s["kernel_server_cpu_per_unit"], sc)])

hdr = ["scenario", "ustack", "kernel", "ustack/kernel", "machine CPU/unit ustack", "kernel",
       "server-process CPU/unit ustack", "kernel"]
print("| " + " | ".join(hdr) + " |")
print("|" + " --- |" * len(hdr))
for row in rows:
    print("| " + " | ".join(row) + " |")
print("[n] = median of n runs, not disturbed unless marked; CPU per transaction or connection in")
print("CPU-us, per GB in CPU-s for bulk; machine CPU = /proc/stat user+nice+system+irq+softirq")
nd = sum(1 for r in runs if r["disturbed"])
if nd:
    print(f"{nd} of {len(runs)} attempts were disturbed by other work on the machine (all kept in the JSON)")

def sh(*c):
    try: return subprocess.run(c, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return ""
model = next((l.split(":", 1)[1].strip() for l in rd("/proc/cpuinfo").splitlines() if l.startswith("model name")), "")
perf_top = rd(os.environ["PERF_TOP"]).splitlines() if os.environ.get("PERF_TOP") else []
doc = {"benchmark": "veth", "command": os.environ["CMDLINE"], "commit": os.environ["COMMIT"],
       "binaries_sha256": os.environ["BINARIES"],
       "kernel": platform.release(), "cpu_model": model, "nproc": os.cpu_count(), "host": platform.node(),
       "loadavg_start": os.environ["LOAD_START"], "loadavg_end": rd("/proc/loadavg").strip(), "seconds": int(os.environ["SECS"]),
       "rounds": int(os.environ["ROUNDS"]), "server_cores": os.environ["SCORES"],
       "veth_offloads_client_side": os.environ["OFFLOADS"], "clk_tck": hz,
       "notes": "machine CPU = /proc/stat user+nice+system+irq+softirq over the run; units are "
                "transactions (rr), connections (crr) or GB (bulk)",
       "summary": summary, "perf_top_ustackd_rr1": perf_top, "runs": runs}
with open(os.environ["OUT"], "w") as f:
    json.dump(doc, f, indent=1)
print("results:", os.environ["OUT"])
if perf_top:
    print("perf, ustackd during its first rr1 run (self time):")
    for l in perf_top[:10]: print("  " + l.strip())
EOF

if [ "$FAILS" -gt 0 ]; then
    log "$FAILS run(s) FAILED (see the table and $OUT)"
    exit 1
fi
exit 0
