#!/bin/bash
# IPv6 foundations end to end, through net_af_xdp and net_af_packet: ustackd has
# USTACK_IP6=2001:2:0:X::2/64 (RFC 5180's benchmarking prefix) and its link-local address
# from the MAC. From the kernel side: `ping -6` to the link-local address (%iface) and to the
# global one, 5/5 answered, and with 4000 and 20000 bytes of data (IPv6 fragments both
# ways: ustack reassembles the request and fragments the reply); `ip -6 neigh` shows ustack's MAC for both, REACHABLE/STALE/
# DELAY/PROBE; ustack resolves the kernel in turn (its unicast probe answered: nd_na_in);
# then malformed IPv6/ICMPv6/ND frames (tests/net/helpers/hostile6.py, python3-scapy) are
# each dropped and counted by their reason, ustackd survives, and ping still works. Then TCP
# over IPv6: the kernel's client sends 200 KB to ustackd's built-in echo service (listening on
# [::]:7, dual stack) at the global and at the link-local address (%iface) and gets every
# byte back; a connect to a closed port is refused (RST).
# net-timeout: 240
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init ping6 20
net_require_tools ping sysctl
net_require_ustackd

SPY=""
for p in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -n "$p" ] && "$p" -c 'import scapy.all' >/dev/null 2>&1; then SPY=$p; break; fi
done
[ -n "$SPY" ] || net_fail "no python3 with scapy (tools/deps.sh installs python3-scapy)"
SEED=${NET_PING6_SEED:-$RANDOM}
NRAND=${NET_PING6_NRAND:-400}

# IPv6 on the kernel's end only (lib.sh turns it off everywhere): no duplicate address
# detection (the address is usable at once), no router advertisements, no forwarding. The
# ustack side's kernel keeps IPv6 off, so it never answers for ustack through af_packet.
K6="2001:2:0:$NET_X::1"
U6="2001:2:0:$NET_X::2"
for k in "net.ipv6.conf.all.disable_ipv6=0" "net.ipv6.conf.$VETH_K.disable_ipv6=0" \
    "net.ipv6.conf.$VETH_K.accept_dad=0" "net.ipv6.conf.$VETH_K.accept_ra=0" \
    "net.ipv6.conf.all.forwarding=0" "net.ipv6.conf.$VETH_K.forwarding=0"; do
    net_k sysctl -qw "$k" >/dev/null || net_fail "sysctl $k failed in the kernel namespace"
done
ip -n "$NS_K" -6 addr add "$K6/64" dev "$VETH_K" nodad || net_fail "cannot add $K6 to $VETH_K"
U_IP6="$U6/64"

# The kernel's link-local address, and ustack's from its MAC (RFC 4291 appendix A).
kll() { ip -n "$NS_K" -6 addr show dev "$VETH_K" scope link | sed -n 's/.*inet6 \(fe80::[0-9a-f:]*\)\/64.*/\1/p' | head -n 1; }
eui64() {
    local IFS=: m
    read -r -a m <<<"$1"
    printf 'fe80::%x:%x:%x:%x\n' $(((0x${m[0]} ^ 2) << 8 | 0x${m[1]})) $((0x${m[2]} << 8 | 0xff)) \
        $((0xfe << 8 | 0x${m[3]})) $((0x${m[4]} << 8 | 0x${m[5]}))
}
ping6() { net_k timeout 20 ping -6 -n -c 5 -i 0.3 -W 2 "$1" 2>&1; }
neigh_ok() {
    local n
    n=$(ip -n "$NS_K" -6 neigh show "$1" dev "$VETH_K")
    grep -Eq "lladdr $UMAC (REACHABLE|STALE|DELAY|PROBE)" <<<"$n"
}

for kind in ${NET_KINDS:-af_xdp af_packet}; do
    ip -n "$NS_K" -6 neigh flush dev "$VETH_K" 2>/dev/null || true
    ustackd_start "$(net_dev "$kind")" --echo 7
    UMAC=$(sed -n 's/^ustackd: ready.* mac=\([0-9a-f:]*\).*/\1/p' "$USTACKD_OUT" | head -n 1)
    [ -n "$UMAC" ] || net_fail "$kind: no mac= in ustackd's ready line: $(head -c 300 "$USTACKD_OUT")"
    grep -Eq '^ustackd: ready.* mcast=' "$USTACKD_OUT" || net_fail "$kind: no mcast= in the ready line"
    ULL=$(eui64 "$UMAC")
    KLL=$(kll)
    [ -n "$KLL" ] || net_fail "$kind: the kernel has no link-local address on $VETH_K"
    net_log "$kind: ustack $UMAC $ULL $U6 ($(sed -n 's/.*\(mcast=[a-z]*\).*/\1/p' "$USTACKD_OUT" | head -n 1)); kernel $KLL $K6"

    out=$(ping6 "$ULL%$VETH_K") || net_fail "$kind: ping -6 $ULL%$VETH_K failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    grep -q '5 packets transmitted, 5 received' <<<"$out" \
        || net_fail "$kind: link-local: not every reply: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    out=$(ping6 "$U6") || net_fail "$kind: ping -6 $U6 failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    grep -q '5 packets transmitted, 5 received' <<<"$out" \
        || net_fail "$kind: global: not every reply: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    # A large echo (1400 bytes of data) comes back whole.
    out=$(net_k timeout 10 ping -6 -n -c 2 -i 0.3 -W 2 -s 1400 "$U6" 2>&1) \
        || net_fail "$kind: ping -6 -s 1400 failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    grep -q '2 received' <<<"$out" || net_fail "$kind: ping -6 -s 1400: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    # Beyond the MTU (4000 and 20000 bytes of data): the kernel fragments the request,
    # ustack reassembles it and sends the reply in fragments (RFC 8200 4.5), which the
    # kernel reassembles. (af_packet's defragmenting socket is IPv4-only.)
    ustackd_stats st
    r0=$(stat_sum "$st" ip6_reasm_ok)
    f0=$(stat_sum "$st" ip6_frag_ok)
    for sz in 4000 20000; do
        out=$(net_k timeout 15 ping -6 -n -c 3 -i 0.3 -W 3 -s "$sz" "$U6" 2>&1) \
            || net_fail "$kind: ping -6 -s $sz failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
        grep -q '3 packets transmitted, 3 received' <<<"$out" \
            || net_fail "$kind: ping -6 -s $sz: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
        grep -q "$((sz + 8)) bytes from $U6" <<<"$out" \
            || net_fail "$kind: ping -6 -s $sz: no full-size reply: $(echo "$out" | head -n 3 | tr '\n' ' ')"
    done
    ustackd_stats st
    r1=$(stat_sum "$st" ip6_reasm_ok)
    f1=$(stat_sum "$st" ip6_frag_ok)
    [ $((r1 - r0)) -ge 6 ] && [ $((f1 - f0)) -ge 6 ] \
        || net_fail "$kind: ip6_reasm_ok +$((r1 - r0)), ip6_frag_ok +$((f1 - f0)), expected >= 6 each"
    net_log "$kind: ping -6 -s 4000 and -s 20000: 6/6 answered (ip6_reasm_ok +$((r1 - r0)), ip6_frag_ok +$((f1 - f0)), ip6_frag_creates $(stat_sum "$st" ip6_frag_creates))"

    for a in "$ULL" "$U6"; do
        neigh_ok "$a" || net_fail "$kind: ip -6 neigh has no usable entry $a lladdr $UMAC: $(ip -n "$NS_K" -6 neigh show dev "$VETH_K" | tr '\n' ';')"
    done

    # ustack learnt the kernel from its solicitations (STALE), used the entry for the
    # replies (DELAY), and after 5 s probes it with a unicast solicitation, which the
    # kernel answers: wait for that advertisement (bounded).
    na=0
    for ((i = 0; i < 16; i++)); do
        ustackd_stats st
        na=$(stat_sum "$st" nd_na_in)
        [ "$na" -ge 1 ] && break
        sleep 0.5
    done
    ustackd_stats st
    replies=$(stat_sum "$st" icmp6_echo_replies)
    ns_in=$(stat_sum "$st" nd_ns_in)
    na_out=$(stat_sum "$st" nd_na_out)
    ns_out=$(stat_sum "$st" nd_ns_out)
    [ "$replies" -ge 12 ] || net_fail "$kind: icmp6_echo_replies=$replies, expected >= 12"
    [ "$ns_in" -ge 2 ] || net_fail "$kind: nd_ns_in=$ns_in, expected >= 2 (both addresses solicited)"
    [ "$na_out" -ge 2 ] || net_fail "$kind: nd_na_out=$na_out, expected >= 2"
    [ "$ns_out" -ge 1 ] || net_fail "$kind: nd_ns_out=$ns_out, expected >= 1 (ustack probes the kernel)"
    [ "$na" -ge 1 ] || net_fail "$kind: nd_na_in=$na: the kernel never answered ustack's solicitation"
    net_log "$kind: 12/12 replies; icmp6_echo_replies=$replies nd_ns_in=$ns_in nd_na_out=$na_out nd_ns_out=$ns_out nd_na_in=$na"

    # Malformed frames: each class must grow its counter by at least what was sent.
    DROPS=(nd_drop_bad icmp6_drop ip6_drop_rh ip6_drop_frag ip6_drop_opt ip6_drop_exthdr ip6_drop_len
        ip6_drop_hdr ip6_drop_src)
    declare -A before=()
    for k in "${DROPS[@]}"; do before[$k]=$(stat_sum "$st" "$k"); done
    errs0=$(stat_sum "$st" icmp6_errors_out)
    out=$(net_k timeout -k 2 120 "$SPY" "$NET_ROOT/tests/net/helpers/hostile6.py" "$VETH_K" "$UMAC" \
        "$ULL" "$U6" "$KLL" "$K6" "$SEED" "$NRAND" 2>"$NET_TMPD/hostile6.err") \
        || net_fail "$kind: the malformed-frame sender failed: $(tail -c 400 "$NET_TMPD/hostile6.err")"
    sleep 1
    ustackd_alive || net_fail "$kind: ustackd died on malformed IPv6 frames (seed $SEED)"
    ustackd_stats st
    line=""
    for k in "${DROPS[@]}"; do
        d=$(($(stat_sum "$st" "$k") - before[$k]))
        want=$(sed -n "s/.* $k=\([0-9]*\).*/\1/p" <<<" ${out#*expect}")
        line="$line $k+$d${want:+/$want}"
        [ -z "$want" ] || [ "$d" -ge "$want" ] || net_fail "$kind: $k grew by $d, expected at least $want (seed $SEED)"
    done
    errs=$(($(stat_sum "$st" icmp6_errors_out) - errs0))
    # The routing headers with segments left each earn a Parameter Problem (rate-limited).
    [ "$errs" -ge 1 ] || net_fail "$kind: no ICMPv6 error sent for the type 0 routing headers"
    net_log "$kind: ${out%% expect*}; drops:$line icmp6_errors_out+$errs"
    out=$(ping6 "$U6") || net_fail "$kind: ping -6 after the malformed frames failed: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    grep -q '5 received' <<<"$out" || net_fail "$kind: ping -6 after the malformed frames: $(echo "$out" | tail -n 2 | tr '\n' ' ')"

    # TCP over IPv6 to the echo service, byte-exact, at both addresses; a closed port: RST.
    ustackd_stats st
    p0=$(stat_sum "$st" tcp_passive_opens)
    for a in "$U6" "$ULL%$VETH_K"; do
        out=$(net_k timeout 30 python3 - "$a" 2>&1 <<'PYEOF'
import os, socket, sys, threading
addr, n = sys.argv[1], 200000
data = os.urandom(n)
s = socket.create_connection((addr, 7), timeout=10)
assert s.family == socket.AF_INET6
t = threading.Thread(target=s.sendall, args=(data,))
t.start()
got = bytearray()
while len(got) < n:
    b = s.recv(65536)
    if not b:
        break
    got += b
t.join()
s.close()
print("echoed", len(got), "ok" if bytes(got) == data else "MISMATCH")
try:
    socket.create_connection((addr, 9), timeout=5)
    print("port 9: connected?!")
except ConnectionRefusedError:
    print("port 9: refused")
PYEOF
        ) || net_fail "$kind: TCP over IPv6 to [$a]:7 failed: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
        grep -q "echoed 200000 ok" <<<"$out" || net_fail "$kind: TCP echo over IPv6 [$a]: $out"
        grep -q "port 9: refused" <<<"$out" || net_fail "$kind: closed port over IPv6 [$a]: $out"
    done
    ustackd_stats st
    p1=$(stat_sum "$st" tcp_passive_opens)
    [ $((p1 - p0)) -ge 2 ] || net_fail "$kind: tcp_passive_opens grew by $((p1 - p0)), expected 2"
    net_log "$kind: TCP over IPv6: 2 x 200000 B echoed byte-exact (global, link-local), closed port refused"
    ustackd_stop
done
net_pass
