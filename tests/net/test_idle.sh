#!/bin/bash
# An idle ustackd costs little: with two stack cores on net_af_xdp (no RX interrupts, so the
# RX core polls with growing sleeps) and on net_af_packet, after a short exchange ustackd's
# CPU time over 5 idle seconds must stay under 5% of one core (docs/io.md, "Idle").
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
    ustackd_stop
done
net_finish
