#!/bin/bash
# bench/wake.sh - the first frame after a pause: how long a round trip takes when the stack
# has been idle, ustack (ustackd on AF_XDP, AF_PACKET) beside the kernel, in one run.
#
#   netns C (client)                          netns S (server side, CPU 1)
#   veth wkc 198.18.76.1/24  <------------>   veth wks: the kernel (198.18.76.2/24), or
#   ping -i GAP (kernel ICMP)                 ustackd alone on it (net_af_xdp0 or
#                                             net_af_packet0, USTACK_IP 198.18.76.2/24)
#
# ping sends one echo request every GAP seconds (default 0.02: far longer than ustackd's
# 200 µs idle spin, so each request finds the stack core asleep); the answer comes from the
# kernel's ICMP or from ustackd's. What it shows: how fast an idle stack core wakes for a
# frame (docs/io.md "The loop and idle sleeping"). Sides alternate within every round; the
# table shows the median over rounds of each side's average and maximum, and the ratio of
# averages ustack/kernel.
#
# Usage (root): bench/wake.sh [--rounds N] [--count C] [--gap S] [--stackd PATH]
#   --rounds N   kernel/af_xdp/af_packet passes (default 2, 1..20)
#   --count C    pings per run (default 50, 5..1000)
#   --gap S      seconds between pings (default 0.02; 0.01..1)
#   --stackd P   the ustackd to measure (default build/ustackd; environment STACKD too)
# Exit status: 0 every run produced a result, 1 otherwise, 2 usage.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
STACKD=${STACKD:-$ROOT/build/ustackd}
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

ROUNDS=2 COUNT=50 GAP=0.02
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=${2-}; shift ;;
        --count) COUNT=${2-}; shift ;;
        --gap) GAP=${2-}; shift ;;
        --stackd) STACKD=${2-}; shift ;;
        -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "wake.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case $ROUNDS$COUNT in *[!0-9]* | "") echo "wake.sh: --rounds and --count want integers" >&2; exit 2 ;; esac
if [ "$ROUNDS" -lt 1 ] || [ "$ROUNDS" -gt 20 ] || [ "$COUNT" -lt 5 ] || [ "$COUNT" -gt 1000 ]; then
    echo "wake.sh: --rounds 1..20, --count 5..1000" >&2
    exit 2
fi
if ! [[ $GAP =~ ^(0\.0[1-9][0-9]*|0\.[1-9][0-9]*|1(\.0*)?)$ ]]; then
    echo "wake.sh: --gap wants seconds, 0.01..1" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || { echo "wake.sh: run as root" >&2; exit 2; }
[ -x "$STACKD" ] || { echo "wake.sh: $STACKD missing (make all)" >&2; exit 2; }
command -v ping >/dev/null || { echo "wake.sh: ping missing (apt-get install iputils-ping)" >&2; exit 2; }

NS_C=wk-c$$ NS_S=wk-s$$ V_C=wkc V_S=wks IP_C=198.18.76.1 IP_S=198.18.76.2
bench_server_pair wake || exit 1
CPU_S=1
[ "$(nproc)" -ge 2 ] || CPU_S=0

# start SIDE: the answering side (kernel|af_xdp|af_packet) in S; 0 once it is up.
start() {
    local side=$1
    ip -n "$NS_S" addr flush dev "$V_S"
    ip -n "$NS_C" neigh flush all
    : >"$TMP/srv.out"
    if [ "$side" = kernel ]; then
        ip -n "$NS_S" addr add "$IP_S/24" dev "$V_S"
        return 0
    fi
    # shellcheck disable=SC2016
    ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; exec env "$@"' sh \
        "USTACK_DEV=net_${side}0,iface=$V_S" "USTACK_IP=$IP_S/24" "USTACK_CORES=$CPU_S" \
        USTACK_LOG=info "$STACKD" >"$TMP/srv.out" 2>&1 </dev/null &
    SRV_PID=$!
    bench_wait_line "$SRV_PID" "$TMP/srv.out" '^ustackd: ready' && return 0
    echo "wake.sh: ustackd on $side not ready: $(grep -v '^EAL' "$TMP/srv.out" | tail -n 2 | tr '\n' ' ')" >&2
    return 1
}


# run SIDE ROUND: a warm-up exchange, then COUNT pings GAP apart; appends
# "side round avg max" (µs) to $TMP/runs.
run() {
    local side=$1 round=$2 out line
    start "$side" || { bench_server_stop; return 1; }
    ip netns exec "$NS_C" ping -n -q -c 3 -i 0.2 -W 2 "$IP_S" >/dev/null 2>&1
    out=$(ip netns exec "$NS_C" timeout 120 ping -n -q -c "$COUNT" -i "$GAP" -W 2 "$IP_S" 2>&1)
    local rc=$?
    [ "$side" = kernel ] || grep -o 'rx_wake=[a-z]*' "$TMP/srv.out" | head -n 1 >"$TMP/rxwake.$side"
    bench_server_stop
    line=$(printf '%s\n' "$out" | sed -n 's|^rtt min/avg/max/mdev = \([0-9.]*\)/\([0-9.]*\)/\([0-9.]*\)/.*|\2 \3|p')
    if [ $rc != 0 ] || [ -z "$line" ]; then
        echo "wake.sh: $side round $round: ping failed (rc $rc): $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')" >&2
        return 1
    fi
    # ms -> µs
    line=$(awk '{printf "%.0f %.0f", $1 * 1000, $2 * 1000}' <<<"$line")
    echo "$side $round $line" >>"$TMP/runs"
    printf '[wake %s] %-9s round %s: avg %s us, max %s us\n' "$(date +%H:%M:%S)" "$side" "$round" \
        "${line% *}" "${line#* }" >&2
}

fail=0
: >"$TMP/runs"
for ((r = 1; r <= ROUNDS; r++)); do
    for side in kernel af_xdp af_packet; do run "$side" "$r" || fail=1; done
done

echo "# The first frame after a pause: ping -i $GAP, $COUNT pings, median of $ROUNDS rounds"
echo "# ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, $(uname -r))"
echo
echo "| side | wake-up | avg (us) | max (us) | avg / kernel's |"
echo "| --- | --- | --- | --- | --- |"
median() { sort -n | awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
kavg=$(awk '$1 == "kernel" {print $3}' "$TMP/runs" | median)
for side in kernel af_xdp af_packet; do
    avg=$(awk -v s="$side" '$1 == s {print $3}' "$TMP/runs" | median)
    max=$(awk -v s="$side" '$1 == s {print $4}' "$TMP/runs" | median)
    how=kernel
    [ "$side" = kernel ] || how=$(sed 's/rx_wake=//' "$TMP/rxwake.$side" 2>/dev/null)
    ratio=-
    [ -n "$avg" ] && [ -n "$kavg" ] && [ "$kavg" -gt 0 ] && ratio=$(awk -v a="$avg" -v k="$kavg" 'BEGIN {printf "%.2fx", a / k}')
    echo "| $side | ${how:--} | ${avg:--} | ${max:--} | $ratio |"
done
exit $fail
