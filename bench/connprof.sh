#!/bin/bash
# bench/connprof.sh - where a connection's time goes: nginx (1 worker, the demo's
# configuration) under ustack in S, one `ab -n N -c 100` (a connection per request) from C on
# the kernel, after a 2,000-request warm-up. Prints, for the measured ab run only, the
# page faults and CPU time of the nginx worker and of ustackd (from /proc/PID/stat: minflt,
# utime+stime in ticks of 10 ms) and ustackd's counters; optionally counts their system
# calls or profiles them. Counts, unlike rates, hardly depend on the machine's load.
#
# Usage (root): bench/connprof.sh [--strace | --perf] [--requests N] [--bin DIR] [--dev-args S]
#   --strace      strace -c -f on the worker and on ustackd during the run (slows both:
#                 use the counts, not the rate); files strace.wk, strace.sd
#   --perf        perf record --call-graph dwarf on both (files perf.wk, perf.sd)
#   --requests N  ab -n (default 20000)
#   --bin DIR     libustack.so and ustackd from DIR (default build/), e.g. an older build
#   --dev-args S  appended to USTACK_DEV (e.g. ,busy_budget=0)
# Environment: NGINX. Everything is left in a new /tmp/connprof.XXXXXX (printed last).
# Exit status: 0 ab completed without failed requests, 1 otherwise, 2 on set-up errors.

set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

MODE=plain N=20000 BIN=$ROOT/build DEVX=""
while [ $# -gt 0 ]; do
    case $1 in
        --strace) MODE=strace ;;
        --perf) MODE=perf ;;
        --requests) N=${2-}; shift ;;
        --bin) BIN=${2-}; shift ;;
        --dev-args) DEVX=${2-}; shift ;;
        *) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "connprof.sh: root needed" >&2; exit 2; }
case $N in '' | *[!0-9]*) echo "connprof.sh: bad --requests '$N'" >&2; exit 2 ;; esac
NGINX=${NGINX:-$(command -v nginx)}
OUT=$(mktemp -d /tmp/connprof.XXXXXX)
mkdir -p "$OUT/bin"
cp "$BIN/libustack.so" "$OUT/bin/libustack.so" && cp "$BIN/ustackd" "$OUT/bin/u-stack-d" || exit 2
chmod -R a+rX "$OUT"
NS_C="ucp-c-$$" NS_S="ucp-s-$$" IP_C=198.18.77.1 IP_S=198.18.77.2
URL="http://$IP_S/index.html"
TRACERS=""
cleanup() {
    local p
    for p in $TRACERS; do kill -INT "$p" 2>/dev/null; done
    for p in $TRACERS; do wait "$p" 2>/dev/null; done
    TRACERS=""
    bench_ns_teardown "$NS_C" "$NS_S"
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT
echo '<html><body>ustack connection profile</body></html>' >"$OUT/index.html"
bench_ngx_prefix "$NGINX" "$OUT/nginx" "$ROOT/bench/nginx/nginx.conf.in" "$OUT/index.html" || exit 2
bench_topology "$NS_C" "$NS_S" cpc cps || exit 2
ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; ulimit -n 20000; exec env "$@"' sh \
    "LD_PRELOAD=$OUT/bin/libustack.so" "USTACK_STACKD=$OUT/bin/u-stack-d" \
    "USTACK_DEV=net_af_xdp0,iface=cps$DEVX" "USTACK_IP=$IP_S/24" USTACK_CORES=1 \
    "USTACK_NAME=ucp-s-$$" "USTACK_STACKD_LOG=$OUT/stackd.log" \
    "$NGINX" "${NGX_ARGS[@]}" >"$OUT/nginx.out" 2>&1 </dev/null &
ip -n "$NS_C" addr add "$IP_C/24" dev cpc
ok=0
for ((i = 0; i < 300; i++)); do
    [ "$(ip netns exec "$NS_C" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL")" = 200 ] && { ok=1; break; }
    sleep 0.1
done
[ "$ok" = 1 ] || { echo "connprof.sh: nginx under ustack not ready ($OUT)" >&2; exit 2; }
SD="" WK=""
for p in $(ip netns pids "$NS_S"); do
    [ "$(bench_comm "$p")" = u-stack-d ] && SD=$p
    grep -q 'worker process' "/proc/$p/cmdline" 2>/dev/null && WK=$p
done
if [ -z "$SD" ] || [ -z "$WK" ]; then echo "connprof.sh: no ustackd or nginx worker found" >&2; exit 2; fi
ab_run() {
    timeout $((120 + N / 100)) ip netns exec "$NS_C" sh -c 'ulimit -n 20000; exec "$@"' sh \
        ab -r -s 10 -n "$1" -c 100 "$URL"
}
ab_run 2000 >"$OUT/warmup.out" 2>&1
case $MODE in
    strace)
        strace -c -f -o "$OUT/strace.wk" -p "$WK" 2>/dev/null & TRACERS="$!"
        strace -c -f -o "$OUT/strace.sd" -p "$SD" 2>/dev/null & TRACERS="$TRACERS $!"
        sleep 1 ;;
    perf)
        perf record --call-graph dwarf,8192 -o "$OUT/perf.wk" -p "$WK" 2>"$OUT/perf.wk.err" & TRACERS="$!"
        perf record ${PERF_EVENT:+-e "$PERF_EVENT"} --call-graph dwarf,8192 -o "$OUT/perf.sd" -p "$SD" 2>"$OUT/perf.sd.err" & TRACERS="$TRACERS $!"
        sleep 1 ;;
esac
stat_of() { awk '{print $10, $14 + $15}' "/proc/$1/stat"; }
read -r wf0 wt0 < <(stat_of "$WK")
read -r sf0 st0 < <(stat_of "$SD")
ab_run "$N" >"$OUT/ab.out" 2>&1
read -r wf1 wt1 < <(stat_of "$WK")
read -r sf1 st1 < <(stat_of "$SD")
timeout 5 "$ROOT/tools/ustack-stat" -n "ucp-s-$$" -s -a >"$OUT/stats" 2>&1
cleanup
done_n=$(sed -n 's/^Complete requests: *//p' "$OUT/ab.out")
failed=$(sed -n 's/^Failed requests: *//p' "$OUT/ab.out")
rate=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$OUT/ab.out")
echo "ab -n $N -c 100: ${done_n:-?} complete, ${failed:-?} failed, ${rate:-?} req/s ($MODE)"
if [ -n "$done_n" ] && [ "$done_n" -gt 0 ]; then
    awk -v n="$done_n" -v wf=$((wf1 - wf0)) -v wt=$((wt1 - wt0)) -v sf=$((sf1 - sf0)) -v st=$((st1 - st0)) 'BEGIN {
        printf "nginx worker: %.2f page faults, %.0f us CPU per request\n", wf / n, wt * 10000 / n
        printf "ustackd:      %.2f page faults, %.0f us CPU per request\n", sf / n, st * 10000 / n }'
fi
grep -E '^(shm_attach_cancelled|shm_efd_writes|shm_efd_fail) ' "$OUT/stats"
if [ "$MODE" = strace ]; then
    for f in wk sd; do
        echo "system calls per request, $( [ $f = wk ] && echo 'nginx worker' || echo ustackd):"
        awk -v n="${done_n:-1}" '$NF != "total" && $4 ~ /^[0-9]+$/ { printf "  %-16s %.3f\n", $NF, $4 / n }
            $NF == "total" { printf "  %-16s %.3f\n", "total", $4 / n }' "$OUT/strace.$f"
    done
fi
echo "$OUT"
[ -n "$done_n" ] && [ "$done_n" = "$N" ] && [ "${failed:-1}" = 0 ]
