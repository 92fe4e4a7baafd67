#!/bin/bash
# Frames larger than ustackd's MTU (net_af_packet, USTACK_MTU=1500, both veth MTUs 9000 so
# they reach the PMD): a 4000-byte ping with DF clear, a raw TCP frame carrying a 5000-byte
# IPv4 packet and one carrying 1600 bytes. ustackd must not crash, must count the big ones as
# drops (rx_drop_oversize, ip_drop_len or icmp_drop grows), must not answer the big ping, and
# must still answer normal pings and echo afterwards. (AF_XDP frames are limited to a page,
# so this uses AF_PACKET.)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init oversize 13
net_require_tools ping socat
net_require_ustackd

DROPS=(rx_drop_oversize ip_drop_len icmp_drop)

mac_of() { ip -n "$1" -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }
hex_ip() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    printf '%02x%02x%02x%02x' "$a" "$b" "$c" "$d"
}
# csum16 HEX: Internet checksum of a hex string (even number of bytes), as 4 hex digits.
csum16() {
    local h=$1 s=0 i
    for ((i = 0; i < ${#h}; i += 4)); do s=$((s + 16#${h:i:4})); done
    while ((s >> 16)); do s=$(((s & 0xffff) + (s >> 16))); done
    printf '%04x' $((~s & 0xffff))
}
# tcp_frame FILE IPLEN: Ethernet + IPv4 (total length IPLEN) + TCP PSH|ACK to port 7 with a
# zero payload, correct IP and TCP checksums.
tcp_frame() {
    local f=$1 iplen=$2 dmac smac src dst ip tcp tcplen pseudo
    dmac=$(mac_of "$NS_U" "$VETH_U" | tr -d :)
    smac=$(mac_of "$NS_K" "$VETH_K" | tr -d :)
    src=$(hex_ip "$IP_K")
    dst=$(hex_ip "$IP_U")
    tcplen=$((iplen - 20))
    ip="4500$(printf '%04x' "$iplen")1234400040060000$src$dst"
    ip="${ip:0:20}$(csum16 "$ip")${ip:24}"
    tcp=9c40000700000001000000015018ffff00000000
    pseudo="$src${dst}0006$(printf '%04x' "$tcplen")"
    tcp="${tcp:0:32}$(csum16 "$pseudo$tcp")${tcp:36}"
    # shellcheck disable=SC2059
    printf "$(echo "$dmac${smac}0800$ip$tcp" | sed 's/../\\x&/g')" >"$f"
    head -c $((tcplen - 20)) /dev/zero >>"$f"
}
# send_frame FILE: one raw frame out of the kernel-side veth.
send_frame() {
    net_k timeout 10 socat -u -b 65536 "OPEN:$1" "INTERFACE:$VETH_K" 2>"$NET_TMPD/socat.err" \
        || net_fail "raw send failed: $(head -c 200 "$NET_TMPD/socat.err")"
}
drops() { stat_sum "$1" "${DROPS[@]}"; }

U_MTU=1500
net_set_mtu 9000
ustackd_start "$(net_dev af_packet)" --echo 7
# The PMD may set the port MTU on the interface; the frames must still reach it.
net_u ip link set "$VETH_U" mtu 9000
net_log "veth MTUs: $VETH_K $(net_k cat "/sys/class/net/$VETH_K/mtu"), $VETH_U $(net_u cat "/sys/class/net/$VETH_U/mtu")"

net_k timeout 15 ping -n -c 3 -W 2 "$IP_U" >/dev/null 2>&1 || net_fail "no answer to normal pings before the test"
ustackd_stats st
d0=$(drops "$st")

# 1. 4000-byte ping, DF clear: the kernel sends one 4028-byte IPv4 packet (MTU 9000).
if net_k timeout 10 ping -n -c 1 -W 2 -s 4000 -M dont "$IP_U" >/dev/null 2>&1; then
    net_fail "ustackd answered a 4028-byte ping with MTU 1500"
fi
ustackd_alive || net_fail "ustackd died after a 4028-byte ping"
ustackd_stats st
d1=$(drops "$st")
[ "$d1" -gt "$d0" ] || net_fail "4028-byte ping not counted as a drop (${DROPS[*]}: $d0 -> $d1)"

# 2. raw TCP frame carrying a 5000-byte IPv4 packet.
tcp_frame "$NET_TMPD/big.bin" 5000
send_frame "$NET_TMPD/big.bin"
sleep 0.3
ustackd_alive || net_fail "ustackd died after a 5014-byte TCP frame"
ustackd_stats st
d2=$(drops "$st")
[ "$d2" -gt "$d1" ] || net_fail "5014-byte TCP frame not counted as a drop (${DROPS[*]}: $d1 -> $d2)"

# 3. raw TCP frame just over the MTU (1614 bytes): only survival is required.
tcp_frame "$NET_TMPD/mid.bin" 1600
send_frame "$NET_TMPD/mid.bin"
sleep 0.3
ustackd_alive || net_fail "ustackd died after a 1614-byte TCP frame"
ustackd_stats st
d3=$(drops "$st")

# Still serving: normal pings and a small echo.
out=$(net_k timeout 15 ping -n -c 3 -W 2 "$IP_U" 2>&1) \
    || net_fail "normal ping after the oversized frames failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
make_random "$NET_TMPD/small.bin" 65536
net_k timeout 20 socat -t 5 - "TCP:$IP_U:7,connect-timeout=5" <"$NET_TMPD/small.bin" >"$NET_TMPD/small.out" 2>/dev/null \
    || net_fail "echo after the oversized frames failed"
cmp -s "$NET_TMPD/small.bin" "$NET_TMPD/small.out" || net_fail "echo after the oversized frames returned different bytes"
net_log "drops (${DROPS[*]}): $d0 -> ping 4028: $d1 -> tcp 5014: $d2 -> tcp 1614: $d3; counters: $(for k in "${DROPS[@]}"; do printf '%s=%s ' "$k" "$(stat_sum "$st" "$k")"; done)"
ustackd_stop
net_pass
