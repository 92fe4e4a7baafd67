#!/bin/bash
# An idle ustackd costs little: with two stack cores on net_af_xdp and on net_af_packet
# (no RX interrupts in DPDK: the RX core sleeps on the queue's kernel socket), after a short
# exchange ustackd's CPU time over 5 idle seconds must stay under 5% of one core, and a frame
# ends a sleep: the ready line says rx_wake=socket, and pings spaced wider than the idle
# spin are each answered by a core woken by its socket (rx_wakeups grows by at least one
# per ping; docs/io.md "The loop and idle sleeping").
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init idle 13
net_require_tools ping
net_require_ustackd

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
ncpu=$(nproc)
U_CORES=0
[ "$ncpu" -ge 2 ] && U_CORES=0,1
for kind in ${NET_KINDS:-af_xdp af_packet}; do
    net_flush_neigh
    ustackd_start "$(net_dev "$kind")" --echo 7
    net_k timeout 10 ping -n -c 2 -W 2 "$IP_U" >/dev/null 2>&1 \
        || net_fail "$kind: ping before the idle period failed"
    sleep 1
    t0=$(ticks "$USTACKD_PID")
    sleep 5
    t1=$(ticks "$USTACKD_PID")
    # Percent of one core, in hundredths: ticks * 100 / (hz * 5 s).
    pct=$(((t1 - t0) * 10000 / (hz * 5)))
    net_log "$kind (cores $U_CORES): idle CPU $((pct / 100)).$(printf '%02d' $((pct % 100)))% of a core"
    [ "$pct" -lt 500 ] || net_softfail "$kind: idle ustackd used $((pct / 100)).$((pct % 100))% of a core (limit 5%)"
    grep -q '^ustackd: ready.* rx_wake=socket ' "$USTACKD_OUT" ||
        net_fail "$kind: the ready line does not say rx_wake=socket: $(grep '^ustackd: ready' "$USTACKD_OUT")"
    ustackd_stats s0
    w0=$(stat_sum "$s0" rx_wakeups)
    net_k timeout 20 ping -n -c 5 -i 0.5 -W 2 "$IP_U" >/dev/null 2>&1 ||
        net_fail "$kind: pings 0.5 s apart were not all answered"
    ustackd_stats s1
    w1=$(stat_sum "$s1" rx_wakeups)
    net_log "$kind: rx_wakeups $w0 -> $w1 over 5 pings 0.5 s apart"
    [ "$((w1 - w0))" -ge 5 ] || net_fail "$kind: rx_wakeups grew by $((w1 - w0)) over 5 pings (expected >= 5)"
    ustackd_stop
done
net_finish
