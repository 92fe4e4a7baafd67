#!/bin/bash
# net-timeout: 260
# IPv4 fragments (issue 9) through net_af_xdp, ustackd on one core and then on two
# (USTACK_CORES=0,1, software steering from the one AF_XDP queue):
#  1. The kernel pings with `ping -s 4000` (3 fragments each way) and `ping -s 65000` (44):
#     every request is answered, so ustackd reassembled the requests and fragmented the
#     replies, which the kernel reassembled. Telemetry (/ustack/stats through
#     tools/ustack-stat) shows ip_reasm_ok and ip_frag_creates grow by at least that much.
#  2. tests/net/helpers/frag_peer.py (scapy) sends an echo request in fragments last one
#     first, one in 64-byte fragments shuffled with every fragment twice (both answered,
#     data checked), overlapping fragments and a datagram beyond 65535 bytes (never
#     answered; ip_reasm_drop_overlap and ip_reasm_drop_bad grow), 8 TCP SYNs each cut in
#     two fragments to the echo port (each answered with a SYN-ACK, and the kernel's RST
#     for it finds the connection: tcp_rst_in +8; on two cores, those whose fragments met on
#     the core not owning the connection went through the hand-off: ip_reasm_handoff and
#     rx_reasm_steered grow), the first fragment of a datagram alone (ustackd runs with
#     USTACK_IPFRAG_TIME=2: ICMP time exceeded code 1 quoting it comes back;
#     ip_reasm_timeout and ip_reasm_timxceed grow) and a later fragment alone (no ICMP),
#     and 500 random fragments. ustackd stays alive, and a plain ping still works
#     afterwards.
#  3. Path MTU discovery through a kernel router with a 1280-byte MTU towards the kernel
#     peer, and connect() failing at once on the router's ICMP unreachables (see below).
# af_packet is not run: the PMD's PACKET_FANOUT socket asks the kernel to defragment
# (PACKET_FANOUT_FLAG_DEFRAG), so whole datagrams beyond the MTU reach ustackd and are
# dropped as oversize (docs/gaps.md). Knobs: NET_FRAG_JUNK (500), NET_FRAG_SEED (9),
# NET_FRAG_KIND (af_xdp), NET_FRAG_CORES ("0 0,1").
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init frag 20
net_require_tools ping python3
net_require_ustackd

PY=$(command -v python3)
SPY=""
for p in /usr/bin/python3 "$PY"; do
    if "$p" -c 'import scapy.all' >/dev/null 2>&1; then SPY=$p; break; fi
done
[ -n "$SPY" ] || net_fail "no python3 with scapy (tools/deps.sh installs python3-scapy)"
STAT="$NET_ROOT/tools/ustack-stat"
JUNK=${NET_FRAG_JUNK:-500}
SEED=${NET_FRAG_SEED:-9}
ECHO=7

# tel NAME...: the named counters of /ustack/stats (summed over cores), one line, in order.
# A core that does not answer in time is left out of the sums (cores_answered < ncores),
# which happens on a loaded machine: such a reply is not used, the query is repeated.
tel() {
    local i out
    for ((i = 0; i < 20; i++)); do
        out=$("$STAT" -n "$USTACKD_PID" --json /ustack/stats 2>/dev/null |
            "$PY" -c 'import json,sys
d = json.load(sys.stdin)
if d.get("cores_answered") != d.get("ncores"):
    sys.exit(1)
print(" ".join(str(d.get(k, 0)) for k in sys.argv[1:]))' "$@") && { echo "$out"; return 0; }
        sleep 0.5
    done
    net_fail "no complete /ustack/stats from ustackd $USTACKD_PID in 20 tries"
}
# ping_ok SIZE COUNT WAIT: every request of COUNT answered.
ping_ok() {
    local out
    out=$(net_k timeout $(($2 * $3 + 10)) ping -n -s "$1" -c "$2" -i 0.3 -W "$3" "$IP_U" 2>&1) || true
    echo "$out" | grep -q "$2 packets transmitted, $2 received" ||
        { net_softfail "$label: ping -s $1: $(echo "$out" | tail -n 2 | tr '\n' ' ')"; return 1; }
}

KIND=${NET_FRAG_KIND:-af_xdp}
for cores in ${NET_FRAG_CORES:-0 0,1}; do
    label="$KIND cores=$cores"
    U_CORES=$cores
    U_STACKD_ENV="USTACK_IPFRAG_TIME=2"
    net_flush_neigh
    ustackd_start "$(net_dev "$KIND")" --echo $ECHO
    tel ip_frag_in >/dev/null

    # 1. pings beyond the MTU
    read -r ok0 cr0 rep0 <<<"$(tel ip_reasm_ok ip_frag_creates icmp_echo_replies)"
    ping_ok 4000 3 2 && ping_ok 65000 2 3 &&
        net_log "$label: ping -s 4000 x3 and -s 65000 x2 answered"
    read -r ok1 cr1 rep1 <<<"$(tel ip_reasm_ok ip_frag_creates icmp_echo_replies)"
    [ $((ok1 - ok0)) -ge 5 ] || net_softfail "$label: ip_reasm_ok grew by $((ok1 - ok0)), expected >= 5"
    [ $((cr1 - cr0)) -ge $((3 * 3 + 2 * 44)) ] ||
        net_softfail "$label: ip_frag_creates grew by $((cr1 - cr0)), expected >= 97"
    [ $((rep1 - rep0)) -ge 5 ] || net_softfail "$label: icmp_echo_replies grew by $((rep1 - rep0))"

    # 2. hostile and out-of-order fragments from scapy
    umac=$(ip -n "$NS_K" neigh show "$IP_U" dev "$VETH_K" | sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p')
    [ -n "$umac" ] || net_fail "$label: no neighbour entry for $IP_U in the kernel namespace"
    names="ip_frag_in ip_reasm_ok ip_reasm_dup ip_reasm_drop_overlap ip_reasm_drop_bad ip_reasm_handoff rx_reasm_steered tcp_rst_in ip_reasm_timeout ip_reasm_timxceed"
    # shellcheck disable=SC2086
    read -r -a b <<<"$(tel $names)"
    out=$(net_k timeout 90 "$SPY" "$NET_ROOT/tests/net/helpers/frag_peer.py" "$IP_U" "$VETH_K" "$umac" $ECHO \
        "$SEED" "$JUNK" 2>"$NET_TMPD/peer.err") || net_softfail "$label: $(tr '\n' ' ' <"$NET_TMPD/peer.err")"
    net_log "$label: $out"
    sleep 0.5
    ustackd_alive || net_fail "$label: ustackd died on the fragments (seed $SEED)"
    # shellcheck disable=SC2086
    read -r -a a <<<"$(tel $names)"
    line=""
    i=0
    for k in $names; do
        d[i]=$((a[i] - b[i]))
        line="$line $k+${d[i]}"
        i=$((i + 1))
    done
    net_log "$label:$line"
    [ "${d[0]}" -ge $((2 + 64 + 4 + 2 + 16 + JUNK)) ] || net_softfail "$label: ip_frag_in grew by ${d[0]}"
    [ "${d[1]}" -ge 10 ] || net_softfail "$label: ip_reasm_ok grew by ${d[1]}, expected >= 10 (2 echoes, 8 SYNs)"
    # Copies arriving after their datagram completed start a new one instead.
    [ "${d[2]}" -ge 1 ] || net_softfail "$label: ip_reasm_dup grew by ${d[2]}, expected >= 1"
    [ "${d[3]}" -ge 2 ] || net_softfail "$label: ip_reasm_drop_overlap grew by ${d[3]}, expected >= 2"
    [ "${d[4]}" -ge 1 ] || net_softfail "$label: ip_reasm_drop_bad grew by ${d[4]}, expected >= 1"
    [ "${d[8]}" -ge 2 ] || net_softfail "$label: ip_reasm_timeout grew by ${d[8]}, expected >= 2"
    [ "${d[9]}" -ge 1 ] || net_softfail "$label: ip_reasm_timxceed grew by ${d[9]}, expected >= 1"
    # The kernel resets each SYN-ACK (no socket of its own there): the RST must find the
    # connection, i.e. the SYN was processed on the core that owns its 4-tuple.
    [ "${d[7]}" -ge 8 ] || net_softfail "$label: tcp_rst_in grew by ${d[7]}, expected >= 8 (connections on the wrong core?)"
    if [ "$cores" = 0,1 ]; then
        # 8 connections whose fragments hash independently of their ports: all 8 landing on
        # their owner has probability 1/256.
        if [ "${d[5]}" -lt 1 ] || [ "${d[6]}" -lt 1 ]; then
            net_softfail "$label: no reassembled SYN was handed to its owner core (ip_reasm_handoff+${d[5]} rx_reasm_steered+${d[6]})"
        fi
    else
        [ "${d[5]}" = 0 ] || net_softfail "$label: ip_reasm_handoff grew on one core"
    fi
    ping_ok 56 2 2 || true
    ustackd_stop
done

# 3. Path MTU discovery and ICMP errors to TCP through two kernel routers
#    (docs/conformance.md "RFC 5927", "RFC 1191"). The pair is rebuilt as usk-u <-> [R1] <->
#    [R2] <-> usk-k: R1 is ustack's gateway (198.18.X.254), R1-R2 is 198.19.X.0/24 with an
#    MTU of 1280, the kernel peer is 198.19.(X+128).1 behind R2; the ends keep 1500, so both
#    announce an MSS of 1460 and ustack's 1500-byte DF segments draw ICMP fragmentation
#    needed (next-hop MTU 1280) from R1. The kernel reads 1 MiB from ustackd's source
#    service through them: byte-exact within 10 s and tcp_pmtu_updates grows (without
#    PMTUD the connection black-holes). Then a program under ustack connects to addresses R1
#    has `prohibit` and `unreachable` routes for: connect() fails with EHOSTUNREACH at once
#    (ICMP codes 13 and 1: a hard error in SYN-SENT, as on Linux), not after the SYN retries.
label="$KIND path MTU"
R_U="198.18.$NET_X.254"
FAR="198.19.$((NET_X + 128))"
R1="usk-r-$NET_NAME-$$-r1"
R2="usk-r-$NET_NAME-$$-r2"
ip netns add "$R1" || net_fail "ip netns add $R1 failed"
NS_R=$R1 # torn down with the others (the teardown loops over the words of NS_R)
ip netns add "$R2" || net_fail "ip netns add $R2 failed"
NS_R="$R1 $R2"
ip -n "$NS_K" link del "$VETH_K" 2>/dev/null || true
ip -n "$NS_U" link add "$VETH_U" type veth peer name usk-ru netns "$R1"
ip -n "$R1" link add usk-rm type veth peer name usk-rm netns "$R2"
ip -n "$R2" link add usk-rk type veth peer name "$VETH_K" netns "$NS_K"
for ns in "$R1" "$R2" "$NS_K" "$NS_U"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
    ip -n "$ns" link set lo up
    for dv in usk-ru usk-rm usk-rk "$VETH_K" "$VETH_U"; do
        ip netns exec "$ns" ethtool -K "$dv" tx off rx off gso off gro off tso off >/dev/null 2>&1 || true
    done
done
for ns in "$R1" "$R2"; do ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1; done
ip -n "$R1" addr add "$R_U/24" dev usk-ru
ip -n "$R1" addr add "198.19.$NET_X.1/24" dev usk-rm
ip -n "$R2" addr add "198.19.$NET_X.2/24" dev usk-rm
ip -n "$R2" addr add "$FAR.254/24" dev usk-rk
ip -n "$R1" link set usk-rm mtu 1280
ip -n "$R2" link set usk-rm mtu 1280
for dv in usk-ru usk-rm; do ip -n "$R1" link set "$dv" up; done
for dv in usk-rm usk-rk; do ip -n "$R2" link set "$dv" up; done
ip -n "$R1" route add default via "198.19.$NET_X.2"
ip -n "$R2" route add "198.18.$NET_X.0/24" via "198.19.$NET_X.1"
ip -n "$R1" route add prohibit "$FAR.77/32"
ip -n "$R1" route add unreachable "$FAR.78/32"
ip -n "$NS_K" addr add "$FAR.1/24" dev "$VETH_K"
ip -n "$NS_K" link set "$VETH_K" up
ip -n "$NS_K" route add default via "$FAR.254"
ip -n "$NS_U" link set "$VETH_U" up
U_CORES=0
U_GW=$R_U
U_STACKD_ENV=""
ustackd_start "$(net_dev "$KIND")" --source 19
read -r pm0 <<<"$(tel tcp_pmtu_updates)"
SRC_BYTES=$((1 << 20))
make_source_pattern "$NET_TMPD/pattern" "$SRC_BYTES"
t0=$(ms_now)
{ net_k timeout 20 socat -u "TCP:$IP_U:19,connect-timeout=5" STDOUT 2>/dev/null || true; } \
    | head -c "$SRC_BYTES" >"$NET_TMPD/source.bin"
t1=$(ms_now)
read -r pm1 rto1 rx1 ig1 ow1 <<<"$(tel tcp_pmtu_updates tcp_rto tcp_retrans tcp_pmtu_ignored tcp_icmp_outwin)"
got=$(fsize "$NET_TMPD/source.bin")
if [ "$got" != "$SRC_BYTES" ] || ! cmp -s "$NET_TMPD/source.bin" "$NET_TMPD/pattern"; then
    net_softfail "$label: source gave $got of $SRC_BYTES bytes (or wrong ones) through the 1280-MTU router"
else
    net_log "$label: 1 MiB byte-exact through the 1280-MTU router in $((t1 - t0)) ms (tcp_pmtu_updates $((pm1 - pm0)), tcp_pmtu_ignored $ig1, tcp_icmp_outwin $ow1, tcp_retrans $rx1, tcp_rto $rto1)"
fi
[ $((pm1 - pm0)) -ge 1 ] || net_softfail "$label: tcp_pmtu_updates grew by $((pm1 - pm0)), expected >= 1"
[ $((t1 - t0)) -lt 10000 ] || net_softfail "$label: 1 MiB took $((t1 - t0)) ms"
ustackd_stop
U_GW=""

# connect() under ustack to the prohibited and the unreachable address: errno and time.
u_env "$KIND" "pmtu-connect"
out=$(u_exec "${U_ENV[@]}" "USTACK_GW=$R_U" timeout -k 2 30 python3 -c '
import socket, sys, time
for host in sys.argv[1:]:
    s = socket.socket()
    s.settimeout(20)
    t = time.monotonic()
    try:
        s.connect((host, 80))
        err = 0
    except OSError as e:
        err = e.errno
    print(host, err, int((time.monotonic() - t) * 1000))
    s.close()
' "$FAR.77" "$FAR.78" 2>"$NET_TMPD/connect.err") || true
net_log "$label: connect: $(echo "$out" | tr '\n' ';')"
for a in 77 78; do
    read -r _ err ms <<<"$(echo "$out" | grep "^$FAR.$a " || echo "x none 99999")"
    [ "$err" = 113 ] || net_softfail "$label: connect to .$a: errno $err, expected 113 (EHOSTUNREACH) $(tr '\n' ' ' <"$NET_TMPD/connect.err" | head -c 200)"
    [ "$ms" -lt 3000 ] || net_softfail "$label: connect to .$a took $ms ms"
done
wait_for 10 u_no_stackd || net_softfail "$label: the spawned ustackd did not exit"
net_finish
