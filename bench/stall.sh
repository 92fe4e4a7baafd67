#!/bin/bash
# bench/stall.sh - a bounded repro loop of bench/run.sh's "both ends, ab" measurement (the
# stall of docs/gaps.md): nginx under ustack in S, optionally a kernel ab from C first (as
# the suite's group "server" runs before group "both"), then ab under ustack in C against
# it, each side with its own ustackd over the veth (AF_XDP). While ab runs, both ustackd's
# counters and connection tables are read every 2 s through telemetry (tools/ustack-stat),
# and both capture their frames (USTACK_PCAP), so a stalled run leaves the state of the
# moment behind.
#
# Usage (root): bench/stall.sh [--runs N] [--no-fill] [--seconds S] [--out DIR]
#   --runs N     iterations, each with fresh namespaces, nginx and ustackd (default 5)
#   --no-fill    skip the kernel ab before the ustack one (default: 3 s of kernel ab)
#   --fill N     the kernel ab makes N requests (at most 60 s) instead of running 3 s: on a
#                busy machine 3 s leave far fewer TIME-WAITs in the server than on an idle one
#   --seconds S  ab -t (default 3)
#   --out DIR    where each iteration's files go (default a new /tmp/stall.XXXXXX); kept
# Environment: BENCH_LIB, BENCH_STACKD (default build/libustack.so, build/ustackd), NGINX.
# Prints one line per iteration: ok (requests done), STALL (ab: 10 s without an event) or
# no result; exit 0 when no iteration stalled, 1 otherwise, 2 on set-up errors. The
# captures (tens of MB) are kept for stalled iterations only.

set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

RUNS=5 FILL=1 FILLN="" SECS=3 OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=${2-}; shift ;;
        --no-fill) FILL=0 ;;
        --fill) FILLN=${2-}; shift ;;
        --seconds) SECS=${2-}; shift ;;
        --out) OUT=${2-}; shift ;;
        *) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "stall.sh: root needed" >&2; exit 2; }
NGINX=${NGINX:-$(command -v nginx)}
LIB=${BENCH_LIB:-$ROOT/build/libustack.so} STACKD=${BENCH_STACKD:-$ROOT/build/ustackd}
OUT=${OUT:-$(mktemp -d /tmp/stall.XXXXXX)}
mkdir -p "$OUT/bin"
cp "$LIB" "$OUT/bin/libustack.so" && cp "$STACKD" "$OUT/bin/u-stack-d" || exit 2
chmod -R a+rX "$OUT"
NS_C="ust-c-$$" NS_S="ust-s-$$" IP_C=198.18.76.1 IP_S=198.18.76.2
URL="http://$IP_S/index.html"
PIDS=""
cleanup() {
    local p
    for p in $PIDS; do bench_kill_bounded "$p" TERM 5; done
    bench_ns_teardown "$NS_C" "$NS_S"
    PIDS=""
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT
echo '<html><body>ustack stall repro</body></html>' >"$OUT/index.html"
bench_ngx_prefix "$NGINX" "$OUT/nginx" "$ROOT/bench/nginx/nginx.conf.in" "$OUT/index.html" || exit 2

# snap DIR TAG: counters and connections of both ustackd into DIR.
snap() {
    local d=$1 tag=$2 n
    for n in s c; do
        timeout 5 "$ROOT/tools/ustack-stat" -n "stall-$n-$$" -s -a >"$d/$tag.$n.stats" 2>&1
        timeout 5 "$ROOT/tools/ustack-stat" -n "stall-$n-$$" -c >"$d/$tag.$n.conns" 2>&1
    done
}

stalls=0 others=0
for ((it = 1; it <= RUNS; it++)); do
    d=$OUT/$it
    mkdir -p "$d"
    bench_topology "$NS_C" "$NS_S" brc brs || exit 2
    common=("LD_PRELOAD=$OUT/bin/libustack.so" "USTACK_STACKD=$OUT/bin/u-stack-d" "USTACK_PCAP_MAX=512M")
    ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; ulimit -n 20000; exec env "$@"' sh \
        "${common[@]}" USTACK_DEV=net_af_xdp0,iface=brs USTACK_IP=$IP_S/24 USTACK_CORES=1 \
        "USTACK_NAME=stall-s-$$" "USTACK_PCAP=$d/s.pcap" "USTACK_STACKD_LOG=$d/s.stackd.log" \
        "$NGINX" "${NGX_ARGS[@]}" >"$d/nginx.out" 2>&1 </dev/null &
    PIDS="$!"
    ip -n "$NS_C" addr add "$IP_C/24" dev brc
    ok=0
    for ((i = 0; i < 300; i++)); do
        [ "$(ip netns exec "$NS_C" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL")" = 200 ] && { ok=1; break; }
        sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "run $it: nginx under ustack not ready"; cleanup; continue; }
    if [ "$FILL" = 1 ]; then
        if [ -n "$FILLN" ]; then fill=(-t 60 -n "$FILLN"); else fill=(-t 3 -n 1000000); fi
        ip netns exec "$NS_C" sh -c 'ulimit -n 20000; exec "$@"' sh ab -r -s 10 "${fill[@]}" -c 100 "$URL" \
            >"$d/kab.out" 2>&1
    fi
    ip -n "$NS_C" addr flush dev brc
    ip -n "$NS_S" neigh flush all
    # As bench/run.sh: ab runs as a child of bench/uclient.py, whose first socket has
    # started the client's ustackd (seconds on a busy machine) before ab's clock starts.
    rm -f "$OUT/fifo"; mkfifo "$OUT/fifo"
    ip netns exec "$NS_C" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; ulimit -n 20000; exec env "$@"' sh \
        "${common[@]}" USTACK_DEV=net_af_xdp0,iface=brc USTACK_IP=$IP_C/24 USTACK_CORES=0 \
        "USTACK_NAME=stall-c-$$" "USTACK_PCAP=$d/c.pcap" "USTACK_STACKD_LOG=$d/c.stackd.log" \
        python3 "$ROOT/bench/uclient.py" <"$OUT/fifo" >"$d/uclient.out" 2>&1 &
    ucpid=$!
    exec {FD}>"$OUT/fifo"
    PIDS="$PIDS $ucpid"
    for ((i = 0; i < 600; i++)); do
        grep -q '^ready' "$d/uclient.out" 2>/dev/null && break
        bench_alive "$ucpid" || break
        sleep 0.1
    done
    python3 -c 'import json, sys; print(json.dumps({"dir": sys.argv[1], "timeout": int(sys.argv[2]), "argv": sys.argv[3:]}))' \
        "$d" $((SECS + 60)) ab -r -s 10 -t "$SECS" -n 1000000 -c 100 "$URL" >&"$FD"
    t0=$SECONDS k=0
    while [ ! -e "$d/rc" ] && bench_alive "$ucpid" && [ $((SECONDS - t0)) -lt $((SECS + 90)) ]; do
        sleep 2
        k=$((k + 1))
        grep -q '^Benchmarking' "$d/out" 2>/dev/null && snap "$d" "$(printf 't%03d' "$k")"
    done
    exec {FD}>&-
    rc=$(cat "$d/rc" 2>/dev/null || echo none)
    cat "$d/out" "$d/err" >"$d/ab.out" 2>/dev/null
    if grep -q 'timeout specified has expired' "$d/ab.out"; then
        stalls=$((stalls + 1))
        echo "run $it: STALL rc $rc: $(grep -v '^Completed\|^This is\|^Copyright\|^Licensed\|^Benchmarking\|^$' "$d/ab.out" | tail -n 2 | tr '\n' ' ')(files in $d)"
    elif [ "$rc" = 0 ] && grep -q 'Requests per second' "$d/ab.out"; then
        echo "run $it: ok, $(grep -m1 '^Complete requests' "$d/ab.out" | tr -s ' '), kernel fill: $(grep -m1 '^Complete requests' "$d/kab.out" 2>/dev/null | tr -s ' ')"
    else
        others=$((others + 1))
        echo "run $it: no result (rc $rc): $(tail -n 2 "$d/ab.out" 2>/dev/null | tr '\n' ' ')(files in $d)"
    fi
    cleanup
    # Keep the captures of stalled runs only: each is tens of MB.
    grep -q 'timeout specified has expired' "$d/ab.out" || rm -f "$d"/*.pcap
done
echo "$stalls of $RUNS runs stalled, $others without a result (files: $OUT)"
[ "$stalls" = 0 ]
