#!/bin/bash
# bench/connprof.sh - where a connection's time goes, a connection per request (ab -c 100; with
# --keepalive, -k), after a 2,000-request warm-up. Server mode (default): nginx (1 worker, the demo's
# configuration) under ustack in S, ab from C on the kernel. Client mode (--client): ab under
# ustack in C (a child of bench/uclient.py, which starts the client's ustackd once, on CPU 0)
# against the same nginx on the kernel in S. Prints, for the measured ab run only, the page
# faults and CPU time of the ustack program (the nginx worker, or ab) and of its ustackd
# (from /proc/PID/stat: minflt, utime+stime in ticks of 10 ms; ab's from getrusage)
# and ustackd's counters; optionally counts their system calls or profiles them. Counts,
# unlike rates, hardly depend on the machine's load.
#
# Usage (root): bench/connprof.sh [--client | --kernel] [--strace | --perf | --cpus | --wire]
#                                 [--keepalive] [--split] [--requests N] [--bin DIR] [--dev-args S]
#   --client      ab under ustack against a kernel nginx (see above)
#   --kernel      server mode with nginx on the kernel (no ustack at all): the reference for
#                 --wire and --cpus
#   --split       server mode: the nginx worker pinned to CPU 1 (the stack core's) and ab to
#                 CPU 0, with or without --kernel (docs/benchmarks.md "Two machines on one")
#   --keepalive   ab -k: 100 connections carry every request (the per-request path alone)
#   --strace      strace -c -f on the ustack program and on ustackd during the run (slows
#                 both: use the counts, not the rate); files strace.wk (or strace.ab),
#                 strace.sd
#   --perf        perf record --call-graph dwarf on both (files perf.wk or perf.ab, perf.sd)
#   --cpus        perf record -a (every CPU, 999 Hz) during the run (file perf.all): prints
#                 each CPU's share by command, so which CPU is full and with what (with two
#                 CPUs: the stack core's, and the one ab and nginx share)
#   --wire        tcpdump on the kernel side's veth during the run (file wire.pcap): prints
#                 the frames per request each way by TCP flags (with a connection per
#                 request: per connection); the rate is then the capture's too
#   --requests N  ab -n (default 20000)
#   --bin DIR     libustack.so and ustackd from DIR (default build/), e.g. an older build
#   --dev-args S  appended to USTACK_DEV (e.g. ,busy_budget=0)
#   --set V=X     one more variable for the ustack side (e.g. USTACK_IDLE_SPIN_US=20); repeatable
# Environment: NGINX. Everything is left in a new /tmp/connprof.XXXXXX (printed last).
# Exit status: 0 ab completed without failed requests, 1 otherwise, 2 on set-up errors.

set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

MODE=plain N=20000 BIN=$ROOT/build DEVX="" SIDE=server SETS=() KA="" KERNEL=0 SPLIT=0
while [ $# -gt 0 ]; do
    case $1 in
        --client) SIDE=client ;;
        --keepalive) KA=-k ;;
        --strace) MODE=strace ;;
        --perf) MODE=perf ;;
        --cpus) MODE=cpus ;;
        --wire) MODE=wire ;;
        --kernel) KERNEL=1 ;;
        --split) SPLIT=1 ;;
        --requests) N=${2-}; shift ;;
        --bin) BIN=${2-}; shift ;;
        --dev-args) DEVX=${2-}; shift ;;
        --set) SETS+=("${2-}"); shift ;;
        *) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "connprof.sh: root needed" >&2; exit 2; }
case $N in '' | *[!0-9]*) echo "connprof.sh: bad --requests '$N'" >&2; exit 2 ;; esac
if [ "$SPLIT" = 1 ] && [ "$SIDE" = client ]; then
    echo "connprof.sh: --split goes with server mode" >&2
    exit 2
fi
if [ "$KERNEL" = 1 ] && { [ "$SIDE" = client ] || [ "$MODE" = strace ] || [ "$MODE" = perf ]; }; then
    echo "connprof.sh: --kernel goes with server mode and --wire, --cpus or neither" >&2
    exit 2
fi
NGINX=${NGINX:-$(command -v nginx)}
OUT=$(mktemp -d /tmp/connprof.XXXXXX)
mkdir -p "$OUT/bin"
cp "$BIN/libustack.so" "$OUT/bin/libustack.so" && cp "$BIN/ustackd" "$OUT/bin/u-stack-d" || exit 2
cp "$ROOT/bench/uclient.py" "$OUT/bin/uclient.py" || exit 2
chmod -R a+rX "$OUT"
NS_C="ucp-c-$$" NS_S="ucp-s-$$" IP_C=198.18.77.1 IP_S=198.18.77.2
URL="http://$IP_S/index.html"
TRACERS="" UCLI_FD=""
cleanup() {
    local p
    if [ -n "$UCLI_FD" ]; then exec {UCLI_FD}>&-; UCLI_FD=""; fi
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
stat_of() { awk '{print $10, $14 + $15}' "/proc/$1/stat"; }
# wire_start NS DEV: tcpdump of TCP on the kernel side's veth (frames redirected to AF_XDP
# never reach a capture on ustack's own veth), stopped with the other tracers.
wire_start() {
    ip netns exec "$1" tcpdump -i "$2" -s 96 -B 65536 --immediate-mode -w "$OUT/wire.pcap" tcp 2>"$OUT/wire.err" & TRACERS="$!"
    sleep 1
}
ab_argv() { echo ab -r -s 10 -n "$1" -c 100 $KA "$URL"; }
if [ "$SIDE" = server ]; then
if [ "$KERNEL" = 1 ]; then
ip -n "$NS_S" addr add "$IP_S/24" dev cps
ip netns exec "$NS_S" sh -c 'ulimit -n 20000; exec "$@"' sh "$NGINX" "${NGX_ARGS[@]}" \
    >"$OUT/nginx.out" 2>&1 </dev/null &
else
ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; ulimit -n 20000; exec env "$@"' sh \
    "LD_PRELOAD=$OUT/bin/libustack.so" "USTACK_STACKD=$OUT/bin/u-stack-d" \
    "USTACK_DEV=net_af_xdp0,iface=cps$DEVX" "USTACK_IP=$IP_S/24" USTACK_CORES=1 \
    "USTACK_NAME=ucp-s-$$" "USTACK_STACKD_LOG=$OUT/stackd.log" "${SETS[@]}" \
    "$NGINX" "${NGX_ARGS[@]}" >"$OUT/nginx.out" 2>&1 </dev/null &
fi
ip -n "$NS_C" addr add "$IP_C/24" dev cpc
ok=0
for ((i = 0; i < 300; i++)); do
    [ "$(ip netns exec "$NS_C" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL")" = 200 ] && { ok=1; break; }
    sleep 0.1
done
[ "$ok" = 1 ] || { echo "connprof.sh: nginx not ready ($OUT)" >&2; exit 2; }
SD="" WK=""
for p in $(ip netns pids "$NS_S"); do
    [ "$(bench_comm "$p")" = u-stack-d ] && SD=$p
    grep -q 'worker process' "/proc/$p/cmdline" 2>/dev/null && WK=$p
done
if { [ -z "$SD" ] && [ "$KERNEL" = 0 ]; } || [ -z "$WK" ]; then
    echo "connprof.sh: no ustackd or nginx worker found" >&2
    exit 2
fi
ab_run() {
    local -a pin=()
    [ "$SPLIT" = 1 ] && pin=(taskset -c 0)
    # shellcheck disable=SC2046 # ab_argv's words
    timeout $((120 + N / 100)) "${pin[@]}" ip netns exec "$NS_C" sh -c 'ulimit -n 20000; exec "$@"' sh \
        $(ab_argv "$1")
}
# --split: the nginx worker on the stack core's CPU (1), ab on CPU 0 (docs/benchmarks.md
# "Two machines on one"); with --kernel the same places.
if [ "$SPLIT" = 1 ] && ! taskset -apc 1 "$WK" >/dev/null; then
    echo "connprof.sh: cannot pin the nginx worker to CPU 1" >&2
    exit 2
fi
ab_run 2000 >"$OUT/warmup.out" 2>&1
case $MODE in
    strace)
        strace -c -f -o "$OUT/strace.wk" -p "$WK" 2>/dev/null & TRACERS="$!"
        strace -c -f -o "$OUT/strace.sd" -p "$SD" 2>/dev/null & TRACERS="$TRACERS $!"
        sleep 1 ;;
    cpus)
        perf record -a -F 999 -o "$OUT/perf.all" 2>"$OUT/perf.all.err" & TRACERS="$!"
        sleep 1 ;;
    wire) wire_start "$NS_C" cpc ;;
    perf)
        perf record --call-graph dwarf,8192 -o "$OUT/perf.wk" -p "$WK" 2>"$OUT/perf.wk.err" & TRACERS="$!"
        perf record ${PERF_EVENT:+-e "$PERF_EVENT"} --call-graph dwarf,8192 -o "$OUT/perf.sd" -p "$SD" 2>"$OUT/perf.sd.err" & TRACERS="$TRACERS $!"
        sleep 1 ;;
esac
sf0=0 st0=0 sf1=0 st1=0
read -r wf0 wt0 < <(stat_of "$WK")
[ -n "$SD" ] && read -r sf0 st0 < <(stat_of "$SD")
ab_run "$N" >"$OUT/ab.out" 2>&1
[ "$MODE" = wire ] && sleep 1 # the capture's last frames
read -r wf1 wt1 < <(stat_of "$WK")
[ -n "$SD" ] && read -r sf1 st1 < <(stat_of "$SD")
[ -n "$SD" ] && timeout 5 "$ROOT/tools/ustack-stat" -n "ucp-s-$$" -s -a >"$OUT/stats" 2>&1
cleanup
else
# Client mode: nginx on the kernel in S, ab under ustack in C as a job of uclient.py.
ip -n "$NS_S" addr add "$IP_S/24" dev cps
ip netns exec "$NS_S" sh -c 'ulimit -n 20000; exec "$@"' sh "$NGINX" "${NGX_ARGS[@]}" \
    >"$OUT/nginx.out" 2>&1 </dev/null &
ok=0
for ((i = 0; i < 300; i++)); do
    [ "$(ip netns exec "$NS_S" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL")" = 200 ] && { ok=1; break; }
    sleep 0.1
done
[ "$ok" = 1 ] || { echo "connprof.sh: kernel nginx not ready ($OUT)" >&2; exit 2; }
LIB=$OUT/bin/libustack.so
mkfifo "$OUT/ucli.fifo" || exit 2
ip netns exec "$NS_C" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; ulimit -n 20000; exec env "$@"' sh \
    "LD_PRELOAD=$LIB" "USTACK_STACKD=$OUT/bin/u-stack-d" \
    "USTACK_DEV=net_af_xdp0,iface=cpc$DEVX" "USTACK_IP=$IP_C/24" USTACK_CORES=0 \
    "USTACK_NAME=ucp-c-$$" "USTACK_STACKD_LOG=$OUT/stackd.log" "${SETS[@]}" \
    python3 "$OUT/bin/uclient.py" <"$OUT/ucli.fifo" >"$OUT/uclient.out" 2>"$OUT/uclient.err" &
exec {UCLI_FD}>"$OUT/ucli.fifo"
ok=0
for ((i = 0; i < 600; i++)); do
    grep -q '^ready' "$OUT/uclient.out" 2>/dev/null && { ok=1; break; }
    sleep 0.1
done
[ "$ok" = 1 ] || { echo "connprof.sh: the ustack client did not start ($OUT)" >&2; exit 2; }
SD=$(bench_ns_pids "$NS_C" u-stack-d | head -n 1)
[ -n "$SD" ] || { echo "connprof.sh: no ustackd found" >&2; exit 2; }
# job NAME WORDS...: run WORDS as a job of uclient.py in $OUT/NAME, wait for it (bounded).
job() {
    local d=$OUT/$1 i
    shift
    mkdir -p "$d"
    python3 -c 'import json, sys; print(json.dumps({"dir": sys.argv[1], "argv": sys.argv[3:], "timeout": int(sys.argv[2])}))' \
        "$d" $((120 + N / 100)) "$@" >&"$UCLI_FD"
    for ((i = 0; i < (130 + N / 100) * 10; i++)); do
        [ -f "$d/rc" ] && return 0
        sleep 0.1
    done
    return 1
}
# shellcheck disable=SC2046 # ab_argv's words
job warmup $(ab_argv 2000)
cp "$OUT/warmup/out" "$OUT/warmup.out"
# The tracer itself runs without the library; only ab gets it back (-E, env).
case $MODE in
    plain) # shellcheck disable=SC2046
        set -- $(ab_argv "$N") ;;
    cpus) # shellcheck disable=SC2046
        set -- $(ab_argv "$N")
        perf record -a -F 999 -o "$OUT/perf.all" 2>"$OUT/perf.all.err" & TRACERS="$!"
        sleep 1 ;;
    wire) # shellcheck disable=SC2046
        set -- $(ab_argv "$N")
        wire_start "$NS_S" cps ;;
    strace) # shellcheck disable=SC2046
        set -- env -u LD_PRELOAD strace -c -f -o "$OUT/strace.ab" -E "LD_PRELOAD=$LIB" $(ab_argv "$N")
        strace -c -f -o "$OUT/strace.sd" -p "$SD" 2>/dev/null & TRACERS="$!"
        sleep 1 ;;
    perf) # shellcheck disable=SC2046
        set -- env -u LD_PRELOAD perf record --call-graph dwarf,8192 -o "$OUT/perf.ab" -- \
            env "LD_PRELOAD=$LIB" $(ab_argv "$N")
        perf record ${PERF_EVENT:+-e "$PERF_EVENT"} --call-graph dwarf,8192 -o "$OUT/perf.sd" -p "$SD" 2>"$OUT/perf.sd.err" & TRACERS="$!"
        sleep 1 ;;
esac
read -r sf0 st0 < <(stat_of "$SD")
job run "$@"
[ "$MODE" = wire ] && sleep 1 # the capture's last frames
read -r sf1 st1 < <(stat_of "$SD")
cp "$OUT/run/out" "$OUT/ab.out"
timeout 5 "$ROOT/tools/ustack-stat" -n "ucp-c-$$" -s -a >"$OUT/stats" 2>&1
# ab's CPU (with its tracer's in --strace and --perf) in ticks of 10 ms, and page faults.
read -r au as wf1 <"$OUT/run/cputime"
wf0=0 wt0=0 wt1=$(awk -v u="$au" -v s="$as" 'BEGIN { printf "%d", (u + s) * 100 + 0.5 }')
cleanup
fi
done_n=$(sed -n 's/^Complete requests: *//p' "$OUT/ab.out")
failed=$(sed -n 's/^Failed requests: *//p' "$OUT/ab.out")
rate=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$OUT/ab.out")
WHO=$SIDE
[ "$KERNEL" = 1 ] && WHO="server, kernel"
echo "ab -n $N -c 100 $KA: ${done_n:-?} complete, ${failed:-?} failed, ${rate:-?} req/s ($WHO, $MODE)"
PROG=nginx\ worker PF=wk
[ "$SIDE" = client ] && PROG=ab PF=ab
if [ -n "$done_n" ] && [ "$done_n" -gt 0 ]; then
    awk -v n="$done_n" -v p="$PROG" -v wf=$((wf1 - wf0)) -v wt=$((wt1 - wt0)) -v sf=$((sf1 - sf0)) -v st=$((st1 - st0)) 'BEGIN {
        printf "%-13s %.2f page faults, %.0f us CPU per request\n", p ":", wf / n, wt * 10000 / n
        if (st || sf) printf "ustackd:      %.2f page faults, %.0f us CPU per request\n", sf / n, st * 10000 / n }'
fi
[ -f "$OUT/stats" ] && grep -E '^(shm_attach_cancelled|shm_efd_writes|shm_efd_fail) ' "$OUT/stats"
if [ "$MODE" = wire ]; then
    echo "frames per request on the wire, by TCP flags (tcpdump of the kernel side's veth):"
    tcpdump -r "$OUT/wire.pcap" -nn tcp 2>/dev/null | awk -v s="$IP_S." -v n="${done_n:-1}" '
        { dir = index($3, s) == 1 ? "server -> client" : "client -> server"
          f = $0; sub(/.*Flags \[/, "", f); sub(/\].*/, "", f)
          len = $0; sub(/.*length /, "", len)
          k = dir " [" f "]" (len + 0 > 0 ? " data" : ""); c[k]++; t[dir]++ }
        END { for (k in c) printf "  %-30s %.3f\n", k, c[k] / n
              for (d in t) printf "  %-30s %.3f\n", d " total", t[d] / n }' | sort
fi
if [ "$MODE" = strace ]; then
    for f in $PF sd; do
        echo "system calls per request, $( [ "$f" = sd ] && echo ustackd || echo "$PROG"):"
        awk -v n="${done_n:-1}" '$NF != "total" && $4 ~ /^[0-9]+$/ { printf "  %-16s %.3f\n", $NF, $4 / n }
            $NF == "total" { printf "  %-16s %.3f\n", "total", $4 / n }' "$OUT/strace.$f"
    done
fi
if [ "$MODE" = cpus ]; then
    echo "samples by CPU and command (perf record -a; the share of all samples, top 8):"
    perf report -i "$OUT/perf.all" --sort cpu,comm --stdio 2>/dev/null | grep '%' | head -n 8
fi
echo "$OUT"
[ -n "$done_n" ] && [ "$done_n" = "$N" ] && [ "${failed:-1}" = 0 ]
