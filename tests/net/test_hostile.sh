#!/bin/bash
# net-timeout: 240
# Hostile peers (issue 6) against a server under LD_PRELOAD=libustack.so (af_xdp by default):
# tests/net/helpers/hostile_server.py serves HTTP (port 80, listen backlog 128), a byte
# source (port 19: "N\n" asks for N bytes, byte i = i % 251) and echo (port 7, SO_KEEPALIVE
# with TCP_KEEPIDLE=1, TCP_KEEPINTVL=1, TCP_KEEPCNT=3). The attacker is the kernel namespace
# (tests/net/helpers/hostile_peer.py with scapy, and hping3). Addresses only in the test's
# 198.18.X.0/24.
#  1. SYN flood: two hping3 -S -i u100 for 8 s from spoofed sources 198.18.X.100/.101
#     (hping3 moves the source port on every packet): 30 curl requests during the flood all
#     answered; tcp_syncookies_sent and tcp_syncookies_ok grow.
#  2. RFC 5961: during a 24 MiB download, 100 blind RSTs (R and RA) with in-window sequence
#     numbers other than rcv_nxt, 25 in-window SYNs and 24 ACKs with hostile SACK blocks,
#     spoofed as the peer: the download completes byte-exact, rcv_nxt unmoved, no RST
#     accepted (tcp_rst_in unchanged), every RST and SYN answered with a challenge ACK or
#     counted as rate limited (tcp_challenge_acks + tcp_challenge_limited grow by at least
#     their number, tcp_challenge_acks > 0). Then one RST with seq = rcv_nxt resets a
#     download (ECONNRESET at the peer, tcp_rst_in grows): the injection does reach the stack.
#  3. A peer that never reads (SO_RCVBUF 64 KiB, a 1 GiB download): zero-window probes go on
#     (tcp_zwp grows over 8 s), the connection stays established, ustackd's RSS grows by less
#     than 4 MiB. Then the peer vanishes (its address deleted in the kernel namespace) with
#     that connection, a download in flight and 5 idle keepalive connections: within 30 s all
#     are dropped (tcp_conn_timeouts +2 for the probes and the retransmissions,
#     tcp_keepalive_drops +5, conns_established 0 in /ustack/stats, the server sees ETIMEDOUT
#     on each). ustackd runs with USTACK_TCP_RETRIES=6 USTACK_TCP_RTO_MAX_MS=1000 for this
#     (the defaults, 15 and 60 s, take about 9 minutes).
#  4. Slowloris: 500 connections sending a partial HTTP request one byte per second for 15 s;
#     20 curl requests meanwhile all answered, the 500 still open at the end.
#  5. Malformed frames (hostile_peer.py malformed: every IPv4/TCP header field, options,
#     flags, truncations, ARP and ICMP junk, plus seeded random mutations): ustackd alive,
#     curl answered, each drop counter grows by at least the number of systematic frames
#     that must be dropped for that reason.
# Knobs: NET_HOSTILE_KIND (af_xdp), NET_HOSTILE_ONLY (parts, e.g. "2 5"), NET_HOSTILE_SEED
# (6) and NET_HOSTILE_RANDOM (4000 random frames). About 150 s.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init hostile 19
net_require_tools curl hping3 python3
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=""
[ -x "$PY" ] || PY=$(command -v python3)
# scapy comes from Debian's python3-scapy: the system interpreter, whatever python3 is first.
SPY=""
for p in /usr/bin/python3 "$PY"; do
    if "$p" -c 'import scapy.all' >/dev/null 2>&1; then SPY=$p; break; fi
done
[ -n "$SPY" ] || net_fail "no python3 with scapy (tools/deps.sh installs python3-scapy)"
H="$NET_ROOT/tests/net/helpers"
STAT="$NET_ROOT/tools/ustack-stat"
KIND=${NET_HOSTILE_KIND:-${NET_KINDS:-af_xdp}}
KIND=${KIND%% *}
SEED=${NET_HOSTILE_SEED:-6}
NRAND=${NET_HOSTILE_RANDOM:-4000}
ONLY=${NET_HOSTILE_ONLY:-1 2 3 4 5}
# A vanished peer must be given up within seconds: 6 unanswered retransmissions (or probes),
# the backed-off timer capped at 1 s (Linux: tcp_retries2 15, RTO up to 120 s).
RETRIES=6 RTO_MAX_MS=1000
HTTP=80 SRC=19 ECHO=7
D="$NET_TMPD/sync"
mkdir -p "$D"
chmod 777 "$D"

# ---------------------------------------------------------------- the server under ustack

USTACKD_OUT="$NET_TMPD/stackd.log"
USTACKD_ERR=""
# shellcheck disable=SC2016
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift; exec env "$@"' \
    sh "${NET_BPFFS:-1}" "LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24" \
    "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT" \
    "USTACK_TCP_RETRIES=$RETRIES" "USTACK_TCP_RTO_MAX_MS=$RTO_MAX_MS" \
    "$PY" "$H/hostile_server.py" "$HTTP" "$SRC" "$ECHO" "$D" </dev/null \
    >"$NET_TMPD/server.out" 2>"$NET_TMPD/server.err" &
SRV=$!
net_bg "$SRV"
wait_until 30 grep -q '^up' "$NET_TMPD/server.out" ||
    net_fail "the server under ustack did not start: $(tail -c 300 "$NET_TMPD/server.err")"
for p in $(ip netns pids "$NS_U" 2>/dev/null); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ustackd ] && USTACKD_PID=$p
done
[ -n "${USTACKD_PID:-}" ] || net_fail "no ustackd in the ustack namespace"
NET_USTACKD_PIDS="$USTACKD_PID"

# One counter (summed over cores) from a fresh SIGUSR1 block.
ctr() {
    local st
    ustackd_stats st
    stat_sum "$st" "$@"
}
# A value of /ustack/stats (telemetry; the per-state connection counts live there).
tel() {
    "$STAT" -n "$USTACKD_PID" --json /ustack/stats 2>/dev/null |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
# shellcheck disable=SC2317 # called through wait_until
established_is() { [ "$(tel conns_established)" = "$1" ]; }
get() { net_k timeout 10 curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$IP_U:$HTTP/" 2>/dev/null; }
# curl_loop N PAUSE OUTFILE: N requests, one line each with the status ("000" on failure).
curl_loop() {
    local i
    for ((i = 0; i < $1; i++)); do
        get >>"$3" || true
        echo >>"$3"
        sleep "$2"
    done
}
count_ok() { grep -c '^200$' "$1" || true; }
peer() { net_k timeout -k 2 "$1" "$SPY" "$H/hostile_peer.py" "${@:2}"; }
# Wait for a background helper's output file to show a line matching a pattern.
wait_line() { wait_until "$1" grep -q "$2" "$3"; }

[ "$(get)" = 200 ] || net_fail "no HTTP answer from the server before the attacks"
part() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- 1. SYN flood

if part 1; then
    net_log "1. SYN flood (hping3 -i u100 x2, 8 s) with curl meanwhile"
    c0_sent=$(ctr tcp_syncookies_sent)
    c0_ok=$(ctr tcp_syncookies_ok)
    HP=""
    for a in 100 101; do
        ip netns exec "$NS_K" timeout -s INT -k 2 8 hping3 -q -S -p "$HTTP" -a "198.18.$NET_X.$a" -i u100 "$IP_U" \
            >"$NET_TMPD/hping.$a.out" 2>&1 &
        HP="$HP $!"
        net_bg $!
    done
    sleep 0.5
    : >"$NET_TMPD/flood.curl"
    curl_loop 30 0.2 "$NET_TMPD/flood.curl"
    for p in $HP; do wait "$p" || true; done
    ustackd_alive || net_fail "ustackd died during the SYN flood"
    ok=$(count_ok "$NET_TMPD/flood.curl")
    sent=$(($(ctr tcp_syncookies_sent) - c0_sent))
    cok=$(($(ctr tcp_syncookies_ok) - c0_ok))
    net_log "flood: $ok/30 curl answered; syncookies sent +$sent, ok +$cok; hping3: $(grep -h 'packets transmitted' "$NET_TMPD"/hping.*.out | tr '\n' ' ')"
    [ "$ok" = 30 ] || net_softfail "SYN flood: $ok of 30 requests answered ($(sort "$NET_TMPD/flood.curl" | uniq -c | tr '\n' ' '))"
    [ "$sent" -gt 0 ] || net_softfail "SYN flood: tcp_syncookies_sent did not grow"
    # The SYN queue was full the whole time: the legitimate clients came in through cookies.
    [ "$cok" -gt 0 ] || net_softfail "SYN flood: no connection completed through a SYN cookie (tcp_syncookies_ok)"
fi

# ---------------------------------------------------------------- 2. blind RST / SYN (RFC 5961)

if part 2; then
    net_log "2. blind in-window RST and SYN injection during a download"
    ca0=$(ctr tcp_challenge_acks)
    cl0=$(ctr tcp_challenge_limited)
    r0=$(ctr tcp_rst_in)
    out=$(peer 90 inject "$IP_U" "$SRC" "$VETH_K" 2>"$NET_TMPD/inject.err") ||
        net_softfail "blind injection: $(tail -c 300 "$NET_TMPD/inject.err")"
    net_log "peer: $out"
    ca=$(($(ctr tcp_challenge_acks) - ca0))
    cl=$(($(ctr tcp_challenge_limited) - cl0))
    r1=$(ctr tcp_rst_in)
    nrst=$(sed -n 's/.*rst=\([0-9]*\).*/\1/p' <<<"$out")
    nsyn=$(sed -n 's/.*syn=\([0-9]*\).*/\1/p' <<<"$out")
    net_log "challenge ACKs +$ca, limited +$cl, tcp_rst_in +$((r1 - r0))"
    if [ -n "$nrst" ]; then
        [ "$ca" -gt 0 ] || net_softfail "no challenge ACK for $nrst in-window RSTs and $nsyn SYNs"
        [ $((ca + cl)) -ge $((nrst + nsyn)) ] ||
            net_softfail "challenge ACKs + limited = $((ca + cl)) < $((nrst + nsyn)) segments injected"
        [ "$r1" = "$r0" ] || net_softfail "tcp_rst_in grew by $((r1 - r0)) during the blind injection"
    fi
    out=$(peer 30 reset "$IP_U" "$SRC" "$VETH_K" 2>"$NET_TMPD/reset.err") ||
        net_softfail "RST with seq = rcv_nxt: $(tail -c 300 "$NET_TMPD/reset.err")"
    net_log "peer: $out"
    r2=$(ctr tcp_rst_in)
    [ "$r2" -gt "$r1" ] || net_softfail "tcp_rst_in did not grow after a RST with seq = rcv_nxt"
fi

# ---------------------------------------------------------------- 3. zero window, vanished peer

if part 3; then
    net_log "3a. a peer that never reads"
    wait_until 10 established_is 0 || net_softfail "connections left established before 3a: $(tel conns_established)"
    ip netns exec "$NS_K" timeout -k 2 60 "$SPY" "$H/hostile_peer.py" zerowin "$IP_U" "$SRC" 55 </dev/null \
        >"$NET_TMPD/zw.out" 2>"$NET_TMPD/zw.err" &
    ZW=$!
    net_bg "$ZW"
    wait_line 15 '^ready' "$NET_TMPD/zw.out" || net_fail "zero-window peer: $(tail -c 300 "$NET_TMPD/zw.err")"
    rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$USTACKD_PID/status"; }
    sleep 2
    z1=$(ctr tcp_zwp)
    m1=$(rss)
    sleep 8
    z2=$(ctr tcp_zwp)
    m2=$(rss)
    e=$(tel conns_established)
    net_log "zero window: tcp_zwp $z1 -> $z2 in 8 s, ustackd VmRSS $m1 -> $m2 KiB, established $e"
    [ "$z2" -gt "$z1" ] || net_softfail "no zero-window probe in 8 s (tcp_zwp $z1 -> $z2)"
    [ "$e" = 1 ] || net_softfail "zero-window connection: conns_established=$e, expected 1"
    [ $((m2 - m1)) -lt 4096 ] || net_softfail "ustackd's RSS grew by $((m2 - m1)) KiB while probing"

    net_log "3b. the peer vanishes (its address deleted): the never-read one, a download in flight, 5 idle keepalive ones"
    k0=$(ctr tcp_keepalive_drops)
    t0c=$(ctr tcp_conn_timeouts)
    ip netns exec "$NS_K" timeout -k 2 100 "$SPY" "$H/hostile_peer.py" hold "$IP_U" "$ECHO" 5 95 </dev/null \
        >"$NET_TMPD/hold.out" 2>"$NET_TMPD/hold.err" &
    HOLD=$!
    net_bg "$HOLD"
    ip netns exec "$NS_K" timeout -k 2 100 "$SPY" "$H/hostile_peer.py" slowread "$IP_U" "$SRC" 95 </dev/null \
        >"$NET_TMPD/slowread.out" 2>"$NET_TMPD/slowread.err" &
    SR=$!
    net_bg "$SR"
    wait_line 15 '^ready' "$NET_TMPD/hold.out" || net_fail "keepalive peer: $(tail -c 300 "$NET_TMPD/hold.err")"
    wait_line 15 '^ready' "$NET_TMPD/slowread.out" || net_fail "slow reader: $(tail -c 300 "$NET_TMPD/slowread.err")"
    sleep 3 # keepalive idle 1 s: probes go out and are answered, nothing is dropped
    e=$(tel conns_established)
    [ "$e" = 7 ] || net_softfail "before the peer vanishes: conns_established=$e, expected 7 (1 + 1 + 5)"
    ip -n "$NS_K" addr del "$IP_K/24" dev "$VETH_K"
    t0=$SECONDS
    wait_until 30 established_is 0 || net_softfail "vanished peer: conns_established=$(tel conns_established) 30 s later"
    dt=$((SECONDS - t0))
    k1=$(ctr tcp_keepalive_drops)
    t1c=$(ctr tcp_conn_timeouts)
    ip -n "$NS_K" addr add "$IP_K/24" dev "$VETH_K"
    nerr() { grep -c "^$1-error ETIMEDOUT" "$NET_TMPD/server.out" || true; }
    wait_until 5 test "$(nerr echo)" -ge 5 -a "$(nerr source)" -ge 2 || true
    net_log "vanished peer: all dropped within ${dt} s; tcp_keepalive_drops +$((k1 - k0)), tcp_conn_timeouts +$((t1c - t0c)); the server saw ETIMEDOUT on $(nerr echo) echo and $(nerr source) source connections"
    [ $((k1 - k0)) -ge 5 ] || net_softfail "tcp_keepalive_drops +$((k1 - k0)), expected +5"
    # The download with data in flight (RTO) and the never-read one (zero-window probes).
    [ $((t1c - t0c)) -ge 2 ] || net_softfail "tcp_conn_timeouts +$((t1c - t0c)), expected +2"
    { [ "$(nerr echo)" -ge 5 ] && [ "$(nerr source)" -ge 2 ]; } ||
        net_softfail "the server saw ETIMEDOUT on $(nerr echo) of 5 keepalive and $(nerr source) of 2 source connections: $(grep -- '-error' "$NET_TMPD/server.out" | sort | uniq -c | tr '\n' ' ')"
    for p in "$ZW" "$HOLD" "$SR"; do net__kill_pid "$p" 2; done
fi

# ---------------------------------------------------------------- 4. slowloris

if part 4; then
    net_log "4. slowloris: 500 connections, a byte per second each, for 15 s"
    ip netns exec "$NS_K" timeout -k 2 60 "$SPY" "$H/hostile_peer.py" slowloris "$IP_U" "$HTTP" 500 15 </dev/null \
        >"$NET_TMPD/slow.out" 2>"$NET_TMPD/slow.err" &
    SL=$!
    net_bg "$SL"
    wait_line 30 '500 open' "$NET_TMPD/slow.err" || net_softfail "slowloris could not open 500 connections: $(tail -c 300 "$NET_TMPD/slow.err")"
    e=$(tel conns_established)
    sl_rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$USTACKD_PID/status")
    : >"$NET_TMPD/slow.curl"
    curl_loop 20 0.3 "$NET_TMPD/slow.curl"
    wait "$SL" || net_softfail "slowloris peer failed: $(tail -c 300 "$NET_TMPD/slow.err")"
    ok=$(count_ok "$NET_TMPD/slow.curl")
    net_log "slowloris: $(cat "$NET_TMPD/slow.out"); established during it $e (ustackd VmRSS $sl_rss KiB); $ok/20 curl answered"
    [ "$ok" = 20 ] || net_softfail "slowloris: $ok of 20 requests answered"
    [ "$e" -ge 500 ] || net_softfail "slowloris: conns_established=$e during the attack, expected >= 500"
    grep -q 'alive=500$' "$NET_TMPD/slow.out" || net_softfail "slowloris: connections lost: $(cat "$NET_TMPD/slow.out")"
fi

# ---------------------------------------------------------------- 5. malformed frames

if part 5; then
    net_log "5. malformed frames (seed $SEED, $NRAND random)"
    DROPS=(eth_drop_type eth_drop_dst eth_drop_short arp_drop_bad ip_drop_hdr ip_drop_csum ip_drop_len
        ip_drop_frag ip_drop_opts ip_drop_dst ip_drop_proto icmp_drop tcp_drop_csum tcp_drop_hdr tcp_drop_opts)
    declare -A before
    ustackd_stats st
    for k in "${DROPS[@]}"; do before[$k]=$(stat_sum "$st" "$k"); done
    umac=$(ip -n "$NS_K" neigh show "$IP_U" dev "$VETH_K" | sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p')
    [ -n "$umac" ] || net_fail "no neighbour entry for $IP_U in the kernel namespace"
    out=$(peer 120 malformed "$IP_U" "$VETH_K" "$umac" "$HTTP" "$SEED" "$NRAND" 2>"$NET_TMPD/malformed.err") ||
        net_softfail "malformed: the sender failed: $(tail -c 300 "$NET_TMPD/malformed.err")"
    net_log "sent: $(tr '\n' ' ' <"$NET_TMPD/malformed.err")"
    sleep 1
    ustackd_alive || net_fail "ustackd died on malformed frames (seed $SEED)"
    [ "$(get)" = 200 ] || net_softfail "no HTTP answer after the malformed frames (seed $SEED)"
    ustackd_stats st
    line=""
    for k in "${DROPS[@]}"; do
        d=$(($(stat_sum "$st" "$k") - before[$k]))
        # The sender names the least each counter must grow by: its systematic frames of that kind.
        want=$(sed -n "s/.* $k=\([0-9]*\).*/\1/p" <<<" ${out#*expect}")
        # On af_packet these fragments never reach ustackd (seen here: ip_drop_frag stays 0
        # and ip_in does not count them; the PMD's packet socket is in a PACKET_FANOUT group,
        # which may defragment).
        [ "$k" = ip_drop_frag ] && [ "$KIND" != af_xdp ] && want=""
        line="$line $k+$d${want:+/$want}"
        [ -z "$want" ] || [ "$d" -ge "$want" ] || net_softfail "malformed: $k grew by $d, expected at least $want (seed $SEED)"
    done
    if [ -n "$out" ]; then net_log "$out"; fi
    net_log "drops:$line"
fi

# ---------------------------------------------------------------- end

touch "$D/exit"
wait "$SRV" || net_softfail "the server exited $?: $(tail -c 300 "$NET_TMPD/server.err")"
wait_until 15 sh -c "! kill -0 $USTACKD_PID 2>/dev/null" || net_softfail "ustackd did not exit with its last client"
net_finish
