#!/bin/bash
# bench/run.sh - the ustack benchmark suite (`make bench`, `make bench-quick`): ustack and the
# kernel's TCP in the same run, alternating (ustack, kernel, ustack, kernel ...), on one
# namespace/veth topology, with the ratio ustack/kernel.
#
#   netns C (client side)                          netns S (server side)
#   veth brc 198.18.74.1  <------- veth ------->   veth brs 198.18.74.2
#   kernel: the address on brc                     kernel: the address on brs
#   ustack: no kernel address; the client's        ustack: no kernel address; the server's
#     ustackd owns .1 through net_af_xdp             ustackd owns .2 through net_af_xdp
#
# Groups (each with its own ustack and kernel runs):
#   server  stock nginx (1 worker, bench/nginx/nginx.conf.in) under LD_PRELOAD=libustack.so
#           vs the same nginx on the kernel; stock ab from C on the kernel, a connection per
#           request and keep-alive (-k), at concurrency 10, 100, 1000, 10000 (quick: 100)
#   client  stock ab under LD_PRELOAD=libustack.so vs ab on the kernel, against a kernel
#           nginx in S; both modes at concurrency 100
#   both    nginx and the client both under ustack vs both on the kernel: wrk -t1 -c100
#           (keep-alive) and ab -c100 (a connection per request). The two ustackd talk over
#           the veth through AF_XDP (--pair afxdp, default) or directly through a DPDK memif
#           (--pair memif; the kernel pair still uses the veth)
#   bulk    build/bench/kserve under LD_PRELOAD=libustack.so vs kserve on the kernel in S;
#           build/bench/loadgen on the kernel in C: bulk-send 1 and 4 streams and bulk-recv
#           1 stream from kserve's source (kserve sending: ustack's transmit path) (Gbit/s),
#           and rr, 1 connection, 64 B (transactions/s and latency p50/p99/p99.9)
# The kernel-to-kernel runs (nginx and the client both on the kernel) are one measurement
# per round, the kernel column of server, client and both alike (wrk: of both). Order in a
# round: nginx under ustack (server; then both, the client under ustack too), nginx moved
# to the kernel with the same ustack client (client), nginx and clients on the kernel (the
# kernel runs), kserve under ustack, kserve on the kernel.
# Each measurement runs for a fixed time (ab -t, wrk -d, loadgen --seconds). The clients
# under ustack are children of bench/uclient.py, started once per round under LD_PRELOAD:
# its ustackd starts (seconds on a busy machine) before and outside every measurement.
# Per run: the tool's result, failed requests, whole-machine CPU-seconds (/proc/stat
# user+nice+system+irq+softirq, every CPU, over the run) per request (per GB for bulk), the
# load average. The summary is the median over rounds and the ratio ustack/kernel.
#
# Usage (root): bench/run.sh [options]
#   --quick          1 round of 3 s per measurement, concurrency 100 only, stack cores 1
#   --cores LIST     stack cores per ustackd, 1 and/or 2, comma-separated (default 1); each
#                    count is a complete pass of every group. 1: CPU 1; 2: CPUs 0-1
#   --rounds N       ustack/kernel pairs (default 2; quick 1)
#   --workers N      nginx worker_processes (default 1, the configuration as shipped)
#   --concs LIST     ab concurrencies of group server, comma-separated (default 10,100,1000,
#                    10000; quick 100)
#   --seconds S      length of each measurement (default 3; ab at concurrency 10000: at
#                    least 10)
#   --only LIST      groups to run: server,client,both,bulk (default all)
#   --pair KIND      afxdp (default) or memif: how the two ustackd of group "both" connect
#   --layout KIND    shared (default) or split: where the programs run. shared: every
#                    program may run on every CPU (the stack cores pinned as always). split:
#                    as on two machines, the server's side (nginx or kserve, and its
#                    ustackd) is confined to the stack cores' CPUs (taskset) and the
#                    client's side (ab, wrk, loadgen, and a client's ustackd) to the other
#                    CPUs, in the ustack and the kernel runs alike; with no CPU left for the
#                    client (2 stack cores on 2 CPUs) that pass runs shared
#                    (docs/benchmarks.md "Two machines on one")
#   --out DIR        where the results go (default bench/results): <UTC date>-<host>.json,
#                    .md, -server.png and -ratio.png
#   --keep           keep the temp directory (every tool's raw output)
#   --rps MASK       receive packet steering on both veth ends to the CPUs in MASK (hex, as
#                    /sys/class/net/*/queues/rx-0/rps_cpus), for ustack and kernel runs alike:
#                    the peer's kernel TCP, which otherwise runs inside ustack's transmit kicks
#                    on the stack core, moves there (docs/benchmarks.md "Where the peer's
#                    kernel work runs"). `--rps sides` with `--layout split`: each veth end
#                    steers to its own side's CPUs (the client's receive path on the
#                    client's CPUs, the server's on the server's). Default: none
#   --set V=X        one more USTACK_* variable for every ustack side (e.g. USTACK_PCAP=FILE
#                    to capture a failure); repeatable. Recorded in the commands
# Environment: BENCH_LIB, BENCH_STACKD (default build/libustack.so, build/ustackd), NGINX.
# Exit status: 0 every run produced a result; 1 some run failed (no result, the server
# died, the tool exited with an error); 2 usage, missing tools or binaries; 130 interrupted.
# Failed requests inside a run that completed are counted in the results, not an error.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"

# Nothing from the caller's environment configures ustack behind the benchmark's back.
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

LIB=${BENCH_LIB:-$ROOT/build/libustack.so}
STACKD=${BENCH_STACKD:-$ROOT/build/ustackd}
KSERVE=$ROOT/build/bench/kserve
LOADGEN=$ROOT/build/bench/loadgen
NGINX=${NGINX:-$(command -v nginx || true)}

QUICK=0 CORES_LIST=1 ROUNDS="" SECS="" ONLY="server,client,both,bulk" PAIR=afxdp OUTDIR="" KEEP=0
WORKERS=1 CONCS="" SETS=() RPS="" LAYOUT=shared
ARGS="$*"
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --cores) CORES_LIST=${2-}; shift ;;
        --rounds) ROUNDS=${2-}; shift ;;
        --seconds) SECS=${2-}; shift ;;
        --only) ONLY=${2-}; shift ;;
        --pair) PAIR=${2-}; shift ;;
        --layout) LAYOUT=${2-}; shift ;;
        --out) OUTDIR=${2-}; shift ;;
        --keep) KEEP=1 ;;
        --rps)
            case ${2-} in sides | [0-9a-fA-F]*) RPS=$2 ;; *) echo "run.sh: --rps takes a hex CPU mask or 'sides'" >&2; exit 2 ;; esac
            shift ;;
        --set)
            case ${2-} in USTACK_[A-Z0-9_]*=*) SETS+=("$2") ;; *) echo "run.sh: --set takes USTACK_NAME=VALUE" >&2; exit 2 ;; esac
            shift ;;
        --workers) WORKERS=${2-}; shift ;;
        --concs) CONCS=${2-}; shift ;;
        -h | --help) sed -n '2,/^# Failed requests inside/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1} SECS=${SECS:-3}
    SRV_CONCS="100"
else
    ROUNDS=${ROUNDS:-2} SECS=${SECS:-3}
    SRV_CONCS="10 100 1000 10000"
fi
[ -n "$CONCS" ] && SRV_CONCS=${CONCS//,/ }
for c in $SRV_CONCS; do
    case $c in '' | *[!0-9]* | 0) echo "run.sh: bad --concs '$CONCS'" >&2; exit 2 ;; esac
done
case $WORKERS in '' | *[!0-9]* | 0) echo "run.sh: bad --workers '$WORKERS'" >&2; exit 2 ;; esac
isnum() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -gt 0 ]; }
isnum "$ROUNDS" || { echo "run.sh: bad --rounds '$ROUNDS'" >&2; exit 2; }
isnum "$SECS" || { echo "run.sh: bad --seconds '$SECS'" >&2; exit 2; }
for c in ${CORES_LIST//,/ }; do
    case $c in 1 | 2) ;; *) echo "run.sh: --cores takes 1 and/or 2, comma-separated" >&2; exit 2 ;; esac
    [ -n "$(bench_cpus "$c")" ] || { echo "run.sh: $c stack cores need $c CPUs" >&2; exit 2; }
done
for g in ${ONLY//,/ }; do
    case $g in server | client | both | bulk) ;; *) echo "run.sh: unknown group '$g'" >&2; exit 2 ;; esac
done
case $PAIR in afxdp | memif) ;; *) echo "run.sh: --pair is afxdp or memif" >&2; exit 2 ;; esac
case $LAYOUT in split | shared) ;; *) echo "run.sh: --layout is split or shared" >&2; exit 2 ;; esac
if [ "$RPS" = sides ] && [ "$LAYOUT" != split ]; then
    echo "run.sh: --rps sides needs --layout split (each side's CPUs)" >&2
    exit 2
fi

[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root (namespaces, veth, AF_XDP)" >&2; exit 2; }
for t in ip ethtool timeout taskset python3 ab wrk curl; do
    command -v "$t" >/dev/null 2>&1 || { echo "run.sh: '$t' not found (tools/deps.sh installs it)" >&2; exit 2; }
done
{ [ -n "$NGINX" ] && [ -x "$NGINX" ]; } || { echo "run.sh: nginx not found (tools/deps.sh installs nginx-light)" >&2; exit 2; }
for b in "$LIB" "$STACKD" "$KSERVE" "$LOADGEN"; do
    [ -e "$b" ] || { echo "run.sh: $b not built (make all)" >&2; exit 2; }
done
command -v gnuplot >/dev/null 2>&1 || echo "run.sh: gnuplot not found: no charts (tools/deps.sh installs gnuplot-nox)" >&2

NS_C="ubr-c-$$" NS_S="ubr-s-$$" V_C=brc V_S=brs
IP_C=198.18.74.1 IP_S=198.18.74.2
# The client under ustack has an address of its own: the server keeps (60 s) the TIME-WAITs
# of the kernel client's connections of the group before, and a SYN of another stack on
# the same 4-tuple is "newer" (timestamp or ISN) only by chance, so half of the reused
# ports waited for a SYN retransmission (docs/benchmarks.md "The both-ends stall").
IP_CU=198.18.74.3
URL="http://$IP_S/index.html"
TMPD=$(mktemp -d /tmp/bench-run.XXXXXX) || exit 2
chmod 755 "$TMPD"
BIN=$TMPD/bin PREFIX=$TMPD/nginx
READY_NS=$NS_C SRV_PID="" SRV_KIND="" SRV_CMD="" CLI_PID="" RUN_N=0 FAILS=0 STACKD_PIDS=""
# The stack process gets its own name: someone's `pkill ustackd` on this shared machine must
# not stop a measured server.
STACKD_COMM="u-stack-d"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ------------------------------------------------------------------ clean-up

# shellcheck disable=SC2317  # also called by the traps
# note_stackd NS: remember the namespace's stack processes (their DPDK runtime directories
# are removed at the end).
note_stackd() {
    local p
    for p in $(bench_ns_pids "$1" "$STACKD_COMM"); do
        case " $STACKD_PIDS " in *" $p "*) ;; *) STACKD_PIDS="$STACKD_PIDS $p" ;; esac
    done
}

# shellcheck disable=SC2317  # called by the traps
cleanup() {
    local p
    trap '' INT TERM
    [ -n "$CLI_PID" ] && bench_kill_bounded "$CLI_PID" TERM 5
    ucli_stop
    stop_server quiet
    note_stackd "$NS_C"; note_stackd "$NS_S"
    bench_ns_teardown "$NS_C" "$NS_S"
    for p in $STACKD_PIDS; do bench_alive "$p" || rm -rf "/var/run/dpdk/ustack-$p"; done
}

# shellcheck disable=SC2317
on_exit() {
    local rc=$?
    trap - EXIT
    cleanup
    if [ "$KEEP" = 1 ]; then log "kept $TMPD"; else rm -rf "$TMPD"; fi
    exit "$rc"
}
trap on_exit EXIT
trap 'log "interrupted: cleaning up"; exit 130' INT TERM

# ------------------------------------------------------------------ set-up

# Private copies: a rebuild during the run cannot mix versions between runs.
mkdir -p "$BIN" "$TMPD/runs" || exit 2
cp "$LIB" "$BIN/libustack.so" && cp "$STACKD" "$BIN/$STACKD_COMM" && cp "$KSERVE" "$BIN/kserve" &&
    cp "$LOADGEN" "$BIN/loadgen" || exit 2
if ! out=$(USTACK=0 LD_PRELOAD=$BIN/libustack.so /bin/true 2>&1) || [ -n "$out" ]; then
    echo "run.sh: $LIB does not load: $out" >&2
    exit 2
fi
BINARIES=$(for b in "$LIB" "$STACKD" "$KSERVE" "$LOADGEN"; do echo "${b#"$ROOT"/} $(sha256sum <"$b" | cut -c1-12)"; done | paste -sd ';')
cp "$ROOT/bench/uclient.py" "$BIN/uclient.py" || exit 2
chmod -R a+rX "$TMPD"

index=$TMPD/index.html
{
    echo '<!DOCTYPE html>'
    echo '<html><head><title>ustack bench</title></head><body>'
    for i in $(seq 1 8); do echo "<p>the ustack benchmark page, line $i</p>"; done
    echo '</body></html>'
} >"$index"
bench_ngx_prefix "$NGINX" "$PREFIX" "$ROOT/bench/nginx/nginx.conf.in" "$index" ||
    { echo "run.sh: nginx -t refused the generated configuration" >&2; exit 2; }
if [ "$WORKERS" != 1 ]; then
    sed -i "s/^worker_processes 1;/worker_processes $WORKERS;/" "$PREFIX/nginx.conf"
    "$NGINX" -t "${NGX_ARGS[@]}" >/dev/null 2>&1 ||
        { echo "run.sh: nginx -t refused worker_processes $WORKERS" >&2; exit 2; }
fi

bench_topology "$NS_C" "$NS_S" "$V_C" "$V_S" || { echo "run.sh: cannot create the topology" >&2; exit 2; }
# rps_set CMASK SMASK: receive packet steering on the client's and the server's veth end.
rps_set() {
    ip netns exec "$NS_C" sh -c "echo $1 > /sys/class/net/$V_C/queues/rx-0/rps_cpus" &&
        ip netns exec "$NS_S" sh -c "echo $2 > /sys/class/net/$V_S/queues/rx-0/rps_cpus"
}
# cpus OP LIST, for a taskset-style CPU list (e.g. 1 or 0,2-7): OP mask, its hex mask (as
# rps_cpus takes it); OP rest, the CPUs of 0..nproc-1 not in it, as a list (1 -> 0,2-7 on 8).
cpus() {
    python3 - "$1" "$2" "$(nproc)" <<'PY'
import sys
op, have = sys.argv[1], set()
for part in sys.argv[2].split(","):
    a, _, b = part.partition("-")
    have.update(range(int(a), int(b or a) + 1))
if op == "mask":
    print("%x" % sum(1 << c for c in have))
    sys.exit(0)
rest = [c for c in range(int(sys.argv[3])) if c not in have]
out, i = [], 0
while i < len(rest):
    j = i
    while j + 1 < len(rest) and rest[j + 1] == rest[j] + 1:
        j += 1
    out.append(str(rest[i]) if i == j else "%d-%d" % (rest[i], rest[j]))
    i = j + 1
print(",".join(out))
PY
}
if [ -n "$RPS" ] && [ "$RPS" != sides ]; then
    ip netns exec "$NS_C" sh -c "echo $RPS > /sys/class/net/$V_C/queues/rx-0/rps_cpus" || exit 2
    ip netns exec "$NS_S" sh -c "echo $RPS > /sys/class/net/$V_S/queues/rx-0/rps_cpus" || exit 2
fi

# addrs C S: kernel addresses on the two veth ends (k: the address, u: none, the ustackd
# there owns it); XDP programs a previous ustackd left go, neighbour caches are flushed.
addrs() {
    local c=$1 s=$2
    ip -n "$NS_C" link set "$V_C" xdp off 2>/dev/null
    ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
    ip -n "$NS_C" addr flush dev "$V_C"
    ip -n "$NS_S" addr flush dev "$V_S"
    [ "$c" = k ] && ip -n "$NS_C" addr add "$IP_C/24" dev "$V_C"
    [ "$s" = k ] && ip -n "$NS_S" addr add "$IP_S/24" dev "$V_S"
    ip -n "$NS_C" neigh flush all 2>/dev/null
    ip -n "$NS_S" neigh flush all 2>/dev/null
    return 0
}

# u_env SIDE(c|s) CORES DEV: the environment of a process under ustack.
u_env() {
    local ip dev
    if [ "$1" = c ]; then ip=$IP_CU; else ip=$IP_S; fi
    dev=$3
    UENV=("LD_PRELOAD=$BIN/libustack.so" "USTACK_STACKD=$BIN/$STACKD_COMM" "USTACK_DEV=$dev"
        "USTACK_IP=$ip/24" "USTACK_CORES=$2" "${SETS[@]}")
}
dev_of() {  # dev_of SIDE(c|s) KIND(ustack|memif)
    local v=$V_C role=client id=1
    [ "$1" = s ] && v=$V_S role=server id=0
    if [ "$2" = memif ]; then
        echo "net_memif$id,role=$role,socket=$TMPD/memif.sock,socket-abstract=no,id=0"
    else
        echo "net_af_xdp0,iface=$v"
    fi
}

# launch NS U CPUS -- CMD...: sets LCMD to run CMD in NS with ulimit -n 20000 (ab -c 10000);
# U=1: with a bpffs for libxdp (`ip netns exec` gives a private /sys) and UENV. CPUS: a
# taskset CPU list CMD and its children (a spawned ustackd too) are confined to, or empty.
# Everything execs, so the pid of LCMD is CMD's own.
launch() {
    local ns=$1 u=$2 cpus=$3
    shift 4
    LCMD=()
    [ -n "$cpus" ] && LCMD=(taskset -c "$cpus")
    if [ "$u" = 1 ]; then
        # shellcheck disable=SC2016
        LCMD+=(ip netns exec "$ns" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null
            ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"' sh "${UENV[@]}" "$@")
    else
        # shellcheck disable=SC2016
        LCMD+=(ip netns exec "$ns" sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh "$@")
    fi
}

# ------------------------------------------------------------------ servers

# start_server KIND(nginx|kserve) SIDE(ustack|memif|kernel) CORES DIR: a fresh server in S;
# 0 once it is ready. For nginx on the kernel or AF_XDP: index.html answers from C (a kernel
# client is needed for that check, so ustack clients come after); for memif: the ustackd's
# ready line.
start_server() {
    local kind=$1 side=$2 cores=$3 d=$4 i u=0 code p
    mkdir -p "$d"
    local -a cmd
    if [ "$kind" = nginx ]; then
        rm -f "$PREFIX/nginx.pid"; : >"$PREFIX/error.log"
        cmd=("$NGINX" "${NGX_ARGS[@]}")
    else
        cmd=("$BIN/kserve" --echo 7 --discard 9 --source 19)
    fi
    if [ "$side" != kernel ]; then
        u=1
        u_env s "$cores" "$(dev_of s "$side")"
        UENV+=("USTACK_STACKD_LOG=$d/stackd.log")
    fi
    launch "$NS_S" "$u" "$SRV_CPUS" -- "${cmd[@]}"
    SRV_CMD="${SRV_CPUS:+taskset -c $SRV_CPUS }ip netns exec S $([ "$u" = 1 ] && echo "env ${UENV[*]} ")${cmd[*]}"
    echo "$SRV_CMD" >"$d/server.cmd"
    "${LCMD[@]}" >"$d/server.out" 2>"$d/server.err" </dev/null &
    SRV_PID=$! SRV_KIND=$kind
    local t0=$SECONDS
    for ((i = 0; SECONDS - t0 < 30 && i < 3000; i++)); do
        bench_alive "$SRV_PID" || break
        [ "$u" = 1 ] && note_stackd "$NS_S"
        if [ "$kind" = kserve ]; then
            grep -q '^kserve: ready' "$d/server.out" 2>/dev/null && return 0
        elif [ "$side" = memif ]; then
            # No kernel path to ask: the library has waited for its ustackd before nginx's
            # listening socket existed, so a pid file, the stack and a worker mean ready.
            p=$(cat "$PREFIX/nginx.pid" 2>/dev/null)
            if [ -n "$p" ] && [ -n "$(bench_ns_pids "$NS_S" "$STACKD_COMM")" ] &&
                [ "$(bench_ns_pids "$NS_S" nginx | wc -l)" -ge 2 ]; then
                sleep 1
                return 0
            fi
        else
            code=$(ip netns exec "$READY_NS" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL" 2>/dev/null)
            [ "$code" = 200 ] && return 0
        fi
        sleep 0.1
    done
    echo "$kind ($side) not ready: $(bench_alive "$SRV_PID" && echo 'not ready within 30 s' || echo exited)" \
        "$(grep -h 'emerg\|alert\|rror' "$d/server.err" "$PREFIX/error.log" "$d/stackd.log" 2>/dev/null | tail -n 2 | tr '\n' ' ')" >"$d/fail"
    return 1
}

# stop_server [quiet]: SIGQUIT (nginx) or SIGTERM (kserve), SIGKILL after 10 s; then wait for
# the server's stack process to exit by itself (it does when its last client is gone).
stop_server() {
    local p i
    [ -n "$SRV_PID" ] || return 0
    if [ "$SRV_KIND" = nginx ]; then
        bench_kill_bounded "$SRV_PID" QUIT 10
        for p in $(bench_ns_pids "$NS_S" nginx); do kill -KILL "$p" 2>/dev/null; done
    else
        bench_kill_bounded "$SRV_PID" TERM 10
    fi
    wait "$SRV_PID" 2>/dev/null
    note_stackd "$NS_S"
    for p in $(bench_ns_pids "$NS_S" "$STACKD_COMM"); do
        for ((i = 0; i < 100; i++)); do bench_alive "$p" || break; sleep 0.1; done
        bench_kill_bounded "$p" TERM 5 || [ "${1:-}" = quiet ] || log "stack process $p had to be killed"
    done
    SRV_PID="" SRV_KIND=""
}

# ------------------------------------------------------------------ clients under ustack

# ucli_start CORES KIND(ustack|memif) DIR: bench/uclient.py under ustack in C, which starts
# the client's ustackd once and then runs every ustack client program as its child; 0 once
# it says "ready" (60 s bound). Jobs go to it through a FIFO (fd UCLI_FD).
UCLI_PID="" UCLI_FD="" UCLI_CMD=""
ucli_start() {
    local cores=$1 kind=$2 d=$3 i
    mkdir -p "$d"
    u_env c "$cores" "$(dev_of c "$kind")"
    UENV+=("USTACK_STACKD_LOG=$d/client-stackd.log")
    launch "$NS_C" 1 "$CLI_CPUS" -- python3 "$BIN/uclient.py"
    UCLI_CMD="${CLI_CPUS:+taskset -c $CLI_CPUS }ip netns exec C env ${UENV[*]} python3 bench/uclient.py"
    rm -f "$TMPD/ucli.fifo"
    mkfifo "$TMPD/ucli.fifo" || return 1
    "${LCMD[@]}" <"$TMPD/ucli.fifo" >"$d/uclient.out" 2>"$d/uclient.err" &
    UCLI_PID=$!
    exec {UCLI_FD}>"$TMPD/ucli.fifo"
    for ((i = 0; i < 600; i++)); do
        if grep -q '^ready' "$d/uclient.out" 2>/dev/null; then
            note_stackd "$NS_C"
            return 0
        fi
        bench_alive "$UCLI_PID" || break
        sleep 0.1
    done
    echo "the ustack client did not start: $(tail -n 2 "$d/uclient.err" "$d/client-stackd.log" 2>/dev/null | tr '\n' ' ')" >"$d/fail"
    ucli_stop
    return 1
}

# ucli_stop: end of its stdin; it and then its ustackd exit by themselves (bounded).
ucli_stop() {
    local p i
    if [ -n "$UCLI_FD" ]; then exec {UCLI_FD}>&-; UCLI_FD=""; fi
    [ -n "$UCLI_PID" ] || return 0
    for ((i = 0; i < 50; i++)); do bench_alive "$UCLI_PID" || break; sleep 0.1; done
    bench_kill_bounded "$UCLI_PID" TERM 5
    wait "$UCLI_PID" 2>/dev/null
    UCLI_PID=""
    note_stackd "$NS_C"
    for p in $(bench_ns_pids "$NS_C" "$STACKD_COMM"); do
        for ((i = 0; i < 100; i++)); do bench_alive "$p" || break; sleep 0.1; done
        bench_kill_bounded "$p" TERM 5 || log "the client's stack process $p had to be killed"
    done
    ip -n "$NS_C" link set "$V_C" xdp off 2>/dev/null
    return 0
}

# ------------------------------------------------------------------ one measurement

# measure GROUP SCEN SIDE ROUND CONC TOOL CORES CLIENT(k|u) -- CMD...: one measured run of
# CMD in C, on the kernel (k) or through the ustack client (u, ucli_start first), bounded by
# SECS + 60 s. Raw output, commands, /proc/stat and times go into a run directory for
# bench/report.py.
measure() {
    local group=$1 scen=$2 side=$3 round=$4 conc=$5 tool=$6 cores=$7 cl=$8 d rc i lim
    shift 9
    RUN_N=$((RUN_N + 1))
    d=$TMPD/runs/$(printf '%04d' "$RUN_N")
    mkdir -p "$d"
    printf 'group=%s\nscenario=%s\nside=%s\nround=%s\nconc=%s\ntool=%s\ncores=%s\nseconds=%s\npair=%s\nlayout=%s\n' \
        "$group" "$scen" "$side" "$round" "$conc" "$tool" "$cores" "$([ "$tool" = ab ] && ab_secs "$conc" || echo "$SECS")" \
        "$([ "$group" = both ] && [ "$side" = ustack ] && echo "$PAIR" || echo -)" "$(layout_word)" >"$d/meta"
    printf '%s\n' "$SRV_CMD" >"$d/server.cmd"
    srv_stats "$d/server.stats.before"
    ip netns exec "$NS_C" nstat -az >"$d/client.nstat.before" 2>/dev/null
    cat /proc/loadavg >"$d/loadavg"
    log "$group $scen $side round $round cores $cores: $*"
    if [ "$cl" = u ]; then
        echo "$UCLI_CMD, running: $*" >"$d/client.cmd"
        python3 -c 'import json, sys; print(json.dumps({"dir": sys.argv[1], "timeout": int(sys.argv[2]), "argv": sys.argv[3:]}))' \
            "$d" $((SECS + 60)) "$@" >&"$UCLI_FD"
        lim=$(((SECS + 90) * 10))
        for ((i = 0; i < lim; i++)); do
            [ -e "$d/rc" ] && break
            bench_alive "$UCLI_PID" || break
            sleep 0.1
        done
        rc=$(cat "$d/rc" 2>/dev/null)
        [ -n "$rc" ] || { rc=255; echo "the ustack client runner $(bench_alive "$UCLI_PID" && echo 'did not finish the job' || echo exited)" >>"$d/fail"; }
    else
        launch "$NS_C" 0 "$CLI_CPUS" -- "$@"
        echo "${CLI_CPUS:+taskset -c $CLI_CPUS }ip netns exec C $*" >"$d/client.cmd"
        grep '^cpu' /proc/stat >"$d/cpu.before"; date +%s.%N >"$d/t.before"
        timeout -k 5 $((SECS + 60)) "${LCMD[@]}" >"$d/out" 2>"$d/err" </dev/null &
        CLI_PID=$!
        rc=0; wait "$CLI_PID" || rc=$?
        CLI_PID=""
        date +%s.%N >"$d/t.after"; grep '^cpu' /proc/stat >"$d/cpu.after"
        echo "$rc" >"$d/rc"
    fi
    [ "$rc" = 0 ] || echo "$tool exit status $rc$([ "$rc" = 124 ] && echo ' (timed out)'): $(grep -v '^Completed\|^Finished\|^Benchmarking\|^$\|^This is\|^Copyright\|^Licensed' "$d/err" 2>/dev/null | tail -n 2 | tr '\n' ' ')" >>"$d/fail"
    if [ -n "$SRV_PID" ] && ! bench_alive "$SRV_PID"; then
        echo "the server exited during the run" >>"$d/fail"
    fi
    if [ -n "$SRV_PID" ] && [ "$SERVER_U" = 1 ] && [ -z "$(bench_ns_pids "$NS_S" "$STACKD_COMM")" ]; then
        echo "the server's stack process exited during the run" >>"$d/fail"
    fi
    srv_stats "$d/server.stats.after"
    ip netns exec "$NS_C" nstat -az >"$d/client.nstat.after" 2>/dev/null
    if [ -s "$d/fail" ]; then
        FAILS=$((FAILS + 1))
        log "FAILED: $(paste -sd ';' "$d/fail")"
    fi
    return 0
}
SERVER_U=0

# srv_stats FILE: the counters of the server's ustackd (tools/ustack-stat), outside the
# measured time; report.py shows what moved in a run that failed requests, with the client
# namespace's kernel TCP counters (nstat: why a kernel client gave up on a connection).
srv_stats() {
    local p
    [ -n "$SRV_PID" ] && [ "$SERVER_U" = 1 ] || return 0
    p=$(bench_ns_pids "$NS_S" "$STACKD_COMM" | head -n 1)
    [ -n "$p" ] && timeout 5 "$ROOT/tools/ustack-stat" -n "$p" -s >"$1" 2>&1
    return 0
}

# ab_secs CONC: ab's time limit. 10000 connections at once overflow nginx's listen queue
# (backlog 511) on either stack and the first requests complete only after SYN
# retransmissions, about 7 s on the kernel: at least 10 s for them.
ab_secs() { if [ "$1" -ge 10000 ] && [ "$SECS" -lt 10 ]; then echo 10; else echo "$SECS"; fi; }
ab_cmd() {  # ab_cmd MODE(close|ka) CONC
    local -a a=(ab -r -s 10 -t "$(ab_secs "$2")" -n 1000000 -c "$2")
    [ "$1" = ka ] && a+=(-k)
    printf '%s\n' "${a[@]}" "$URL"
}
wrk_cmd() { printf '%s\n' wrk -t1 -c100 "-d${SECS}s" --timeout 10s --latency "$URL"; }

want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }

# server_fail GROUP SIDE ROUND CORES DIR: a server or client runner that did not start.
server_fail() {
    local d
    FAILS=$((FAILS + 1))
    log "FAILED: $(cat "$5/fail")"
    RUN_N=$((RUN_N + 1))
    d=$TMPD/runs/$(printf '%04d' "$RUN_N")
    mkdir -p "$d"
    printf 'group=%s\nscenario=start\nside=%s\nround=%s\nconc=0\ntool=server\ncores=%s\nseconds=%s\npair=-\n' \
        "$1" "$2" "$3" "$4" "$SECS" >"$d/meta"
    cp "$5/fail" "$d/fail"
    cp "$5/server.cmd" "$d/server.cmd" 2>/dev/null
}

# ------------------------------------------------------------------ one round
#
# The kernel-to-kernel measurements (nginx and ab or wrk both on the kernel) are the
# reference of three groups: the kernel column of "client" and of "both" is the kernel
# run of "server" with the same command (report.py takes it from there); it is measured
# once per round. Order in a round: nginx under ustack (server; then both, with the client
# also under ustack), nginx on the kernel (the kernel runs; then client, ab under ustack),
# kserve under ustack, kserve on the kernel.

# phase_ustack CORES ROUND: every ustack-side run that needs nginx. nginx under ustack with
# ab from the kernel (server); then the ustack client runner in C: wrk and ab against that
# nginx (both), and after nginx moved to the kernel, ab against it (client). One client
# ustackd serves both groups (its start costs seconds).
phase_ustack() {
    local cores=$1 r=$2 d c m both_here=0 ucli=0
    want both && [ "$PAIR" = afxdp ] && both_here=1
    d=$TMPD/srv/nginx.$cores.$r.ustack
    mkdir -p "$d"
    if want server || [ "$both_here" = 1 ]; then
        addrs k u
        SERVER_U=1
        if start_server nginx ustack "$(bench_cpus "$cores")" "$d"; then
            if want server; then
                for c in $SRV_CONCS; do
                    for m in close ka; do
                        mapfile -t cmd < <(ab_cmd "$m" "$c")
                        measure server "$m" ustack "$r" "$c" ab "$cores" k -- "${cmd[@]}"
                    done
                done
            fi
            if [ "$both_here" = 1 ] || want client; then
                ucli_up "$cores" "$r" "$d" && ucli=1
            fi
            if [ "$ucli" = 1 ] && [ "$both_here" = 1 ]; then
                mapfile -t cmd < <(wrk_cmd)
                measure both wrk ustack "$r" 100 wrk "$cores" u -- "${cmd[@]}"
                mapfile -t cmd < <(ab_cmd close 100)
                measure both close ustack "$r" 100 ab "$cores" u -- "${cmd[@]}"
            fi
        else
            server_fail server ustack "$r" "$cores" "$d"
        fi
        stop_server
    fi
    if want client; then
        if [ "$ucli" = 0 ]; then
            addrs u u
            ucli_up "$cores" "$r" "$d" && ucli=1
        fi
        if [ "$ucli" = 1 ]; then
            # nginx on the kernel in S; C has no kernel address while the runner holds it,
            # so S checks that nginx answers itself.
            ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
            ip -n "$NS_S" addr add "$IP_S/24" dev "$V_S"
            SERVER_U=0 READY_NS=$NS_S
            if start_server nginx kernel "" "$d/kernel-nginx"; then
                for m in close ka; do
                    mapfile -t cmd < <(ab_cmd "$m" 100)
                    measure client "$m" ustack "$r" 100 ab "$cores" u -- "${cmd[@]}"
                done
            else
                server_fail client kernel "$r" "$cores" "$d/kernel-nginx"
            fi
            READY_NS=$NS_C
            stop_server
        fi
    fi
    ucli_stop
}

# ucli_up CORES ROUND DIR: the ustack client runner in C (C's kernel address goes).
ucli_up() {
    ip -n "$NS_C" addr flush dev "$V_C"
    ip -n "$NS_S" neigh flush all 2>/dev/null
    ucli_start "$(bench_cpus "$1" | client_cpus both)" ustack "$3/client" && return 0
    server_fail client ustack "$2" "$1" "$3/client"
    return 1
}

# both_ustack CORES ROUND KIND DIR: wrk and ab under ustack against the running nginx.
both_ustack() {
    local cores=$1 r=$2 kind=$3 d=$4
    ip -n "$NS_C" addr flush dev "$V_C"
    ip -n "$NS_S" neigh flush all 2>/dev/null
    if ucli_start "$(bench_cpus "$cores" | client_cpus both)" "$kind" "$d/client"; then
        mapfile -t cmd < <(wrk_cmd)
        measure both wrk ustack "$r" 100 wrk "$cores" u -- "${cmd[@]}"
        mapfile -t cmd < <(ab_cmd close 100)
        measure both close ustack "$r" 100 ab "$cores" u -- "${cmd[@]}"
        ucli_stop
    else
        server_fail both ustack "$r" "$cores" "$d/client"
    fi
}

# phase_memif CORES ROUND: group both with the two ustackd joined by a memif.
phase_memif() {
    local cores=$1 r=$2 d
    want both && [ "$PAIR" = memif ] || return 0
    d=$TMPD/srv/nginx.$cores.$r.memif
    addrs u u
    SERVER_U=1
    if ! start_server nginx memif "$(bench_cpus "$cores")" "$d"; then
        server_fail both ustack "$r" "$cores" "$d"; stop_server quiet; return 0
    fi
    both_ustack "$cores" "$r" memif "$d"
    stop_server
}

# phase_kernel_nginx CORES ROUND
phase_kernel_nginx() {
    local cores=$1 r=$2 d c m concs=100
    want server || want client || want both || return 0
    want server && concs=$SRV_CONCS
    d=$TMPD/srv/nginx.$cores.$r.kernel
    addrs k k
    SERVER_U=0
    if ! start_server nginx kernel "" "$d"; then
        server_fail server kernel "$r" "$cores" "$d"; stop_server quiet; return 0
    fi
    for c in $concs; do
        for m in close ka; do
            mapfile -t cmd < <(ab_cmd "$m" "$c")
            measure server "$m" kernel "$r" "$c" ab "$cores" k -- "${cmd[@]}"
        done
    done
    if want both; then
        mapfile -t cmd < <(wrk_cmd)
        measure both wrk kernel "$r" 100 wrk "$cores" k -- "${cmd[@]}"
    fi
    stop_server
}

# phase_bulk CORES ROUND SIDE
phase_bulk() {
    local cores=$1 r=$2 side=$3 d sc
    want bulk || return 0
    d=$TMPD/srv/bulk.$cores.$r.$side
    if [ "$side" = ustack ]; then addrs k u; SERVER_U=1; else addrs k k; SERVER_U=0; fi
    if ! start_server kserve "$side" "$(bench_cpus "$cores")" "$d"; then
        server_fail bulk "$side" "$r" "$cores" "$d"; stop_server quiet; return 0
    fi
    # Unmeasured warm-up: ARP, first connection.
    ip netns exec "$NS_C" timeout 20 "$BIN/loadgen" --mode rr --server "$IP_S" --port 7 \
        --conns 1 --max 100 --seconds 5 >"$d/warmup.out" 2>&1 ||
        log "warm-up failed: $(tail -n 1 "$d/warmup.out")"
    for sc in send1 send4 recv1 rr1; do
        case $sc in
            send1) set -- --mode bulk-send --port 9 --conns 1 ;;
            send4) set -- --mode bulk-send --port 9 --conns 4 ;;
            recv1) set -- --mode bulk-recv --port 19 --conns 1 ;;
            rr1) set -- --mode rr --port 7 --conns 1 --size 64 ;;
        esac
        measure bulk "$sc" "$side" "$r" "$6" loadgen "$cores" k -- \
            "$BIN/loadgen" "$@" --server "$IP_S" --seconds "$SECS" --json
    done
    stop_server
}

# client_cpus GROUP: the client's stack CPUs from the server's (stdin): with one core each
# and both ends on ustack, the client's stack gets CPU 0 and the server's CPU 1.
client_cpus() {
    local c
    read -r c
    if [ "$1" = both ] && [ "$c" = 1 ]; then echo 0; else echo "$c"; fi
}

# set_layout CORES: SRV_CPUS and CLI_CPUS of the pass (both empty: shared).
SRV_CPUS="" CLI_CPUS=""
set_layout() {
    SRV_CPUS="" CLI_CPUS=""
    [ "$RPS" = sides ] && { rps_set 0 0 || log "rps_cpus could not be set"; }
    [ "$LAYOUT" = split ] || return 0
    local s c
    s=$(bench_cpus "$1")
    c=$(cpus rest "$s")
    if [ -z "$c" ]; then
        log "cores $1: no CPU is left for the client side on this machine: this pass runs shared"
        return 0
    fi
    SRV_CPUS=$s CLI_CPUS=$c
    log "cores $1: server side on CPU(s) $SRV_CPUS, client side on CPU(s) $CLI_CPUS (ustack and kernel alike)"
    if [ "$RPS" = sides ]; then
        rps_set "$(cpus mask "$CLI_CPUS")" "$(cpus mask "$SRV_CPUS")" || log "rps_cpus could not be set"
    fi
}
layout_word() { if [ -n "$SRV_CPUS" ]; then echo "split:$SRV_CPUS/$CLI_CPUS"; else echo shared; fi; }

# ------------------------------------------------------------------ main

LOAD_START=$(cat /proc/loadavg)
log "load average: $LOAD_START (other work on this machine skews every number)"
log "namespaces $NS_C / $NS_S; cores $CORES_LIST; layout $LAYOUT; $ROUNDS round(s) of $SECS s; groups $ONLY; nginx workers $WORKERS${RPS:+; rps_cpus $RPS on both veth ends}"
T0=$SECONDS
for cores in ${CORES_LIST//,/ }; do
    set_layout "$cores"
    for ((r = 1; r <= ROUNDS; r++)); do
        phase_ustack "$cores" "$r"
        phase_memif "$cores" "$r"
        phase_kernel_nginx "$cores" "$r"
        phase_bulk "$cores" "$r" ustack
        phase_bulk "$cores" "$r" kernel
    done
done
log "measured in $((SECONDS - T0)) s"

mkdir -p "${OUTDIR:=$ROOT/bench/results}" || exit 2
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT+dirty"
python3 "$ROOT/bench/report.py" --runs "$TMPD/runs" --out-dir "$OUTDIR" \
    --base "$(date -u +%Y%m%dT%H%M%SZ)-$(hostname -s)" --command "bench/run.sh${ARGS:+ $ARGS}" \
    --commit "$COMMIT" --binaries "$BINARIES" --loadavg-start "$LOAD_START" \
    --nginx "$("$NGINX" -v 2>&1 | sed 's|^nginx version: ||')" \
    --ab "$(ab -V 2>&1 | sed -n 's/^This is ApacheBench, Version \([^ ]*\).*/\1/p')" \
    --wrk "$(wrk -v 2>&1 | head -n 1)" --quick "$QUICK" --seconds "$SECS" --rounds "$ROUNDS" ||
    FAILS=$((FAILS + 1))
if [ "$FAILS" -gt 0 ]; then
    log "$FAILS failure(s): see above"
    exit 1
fi
exit 0
