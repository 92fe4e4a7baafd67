#!/bin/bash
# The kernel peer pings ustackd (ping -c 5 -W 2) through net_af_xdp and net_af_packet: every
# echo request is answered, and ustackd's counters saw the ARP and the echoes.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init ping 10
net_require_tools ping
net_require_ustackd

for kind in ${NET_KINDS:-af_xdp af_packet}; do
    net_flush_neigh
    ustackd_start "$(net_dev "$kind")"
    out=$(net_k timeout 20 ping -n -c 5 -W 2 "$IP_U" 2>&1) \
        || net_fail "$kind: ping failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    echo "$out" | grep -q '5 packets transmitted, 5 received' \
        || net_fail "$kind: not every reply received: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    ustackd_stats st
    replies=$(stat_sum "$st" icmp_echo_replies)
    [ "$replies" -ge 5 ] || net_fail "$kind: icmp_echo_replies=$replies, expected >= 5"
    arp=$(stat_sum "$st" arp_in)
    [ "$arp" -ge 1 ] || net_fail "$kind: arp_in=$arp, expected >= 1"
    ustackd_stop
    net_log "$kind: 5/5 replies, icmp_echo_replies=$replies arp_in=$arp"
done
net_pass
