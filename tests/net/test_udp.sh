#!/bin/bash
# UDP under LD_PRELOAD=libustack.so, driven from the kernel side (af_packet and af_xdp):
#   echo    - `socat UDP4-LISTEN:7 PIPE` under ustack (it learns the first sender, connects
#             its socket to it and echoes every datagram); a kernel-side Python driver sends
#             UDP_N datagrams (default 10,000) of sizes 1..1472, one at a time, and checks
#             every echo byte for byte (each waits up to 10 s: a slow echo is shown, a
#             lost one fails);
#   refused - a kernel-side socket connected to a port nothing listens on under ustack gets
#             ECONNREFUSED (ustack's ICMP port unreachable), and ustackd counted it;
#   dns     - dnsmasq under ustack (no upstream, answers from --address/--host-record)
#             answers `dig` from the kernel side for several names, each answer checked;
#             a name it does not know gets NXDOMAIN; every query gets one try of up to
#             10 s (an answer after 2 s is shown as slow), and every datagram ustackd
#             queued for dnsmasq was answered (shm_udp_rx = shm_udp_tx);
#   resolver - `dig` under ustack (libuv: UDP batches through syscall(__NR_sendmmsg /
#             __NR_recvmmsg)) asks a kernel-side dnsmasq on ustack's subnet and gets the
#             answer through ustack (ustackd counts the datagrams); glibc's resolver
#             (`getent hosts`) under ustack with /etc/resolv.conf (the namespace's,
#             /etc/netns/<ns>/resolv.conf) naming 127.0.0.1 reaches a kernel dnsmasq on the
#             ustack namespace's loopback (glibc calls its own socket functions internally,
#             which no interposer sees: its resolver is always the kernel's);
#   echo6   - `socat UDP6-LISTEN:7 PIPE` under ustack with USTACK_IP6 echoes 100 datagrams
#             of 3000 bytes over IPv6, fragmented both ways (ustack reassembles and
#             fragments: ip6_reasm_ok, ip6_frag_ok);
#   switch  - USTACK_UDP=0 leaves a UDP socket to the kernel (a socket fd, not an eventfd),
#             and a bad USTACK_UDP value fails socket() with EINVAL and a message.
# Every program is bounded (timeout); teardown kills whatever still runs in the namespaces.
# A failed check is reported (with the tail of ustackd's log) and the other checks still run.
# Knobs: NET_KINDS (default "af_packet af_xdp"), UDP_N (datagrams per echo run), LIBUSTACK.
# net-timeout: 400
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init udp 20
net_require_tools socat python3 timeout
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=""
[ -x "$PY" ] || PY=$(command -v python3)
UDP_N=${UDP_N:-10000}
P_ECHO=7 P_NONE=9 P_DNS=53

# The kernel-side echo driver: argv = ip port count [lo hi]. Prints "ok N ..." or "fail ..."
# lines. Each datagram waits up to 10 s for its echo: one echoed after 2 s is slow (a loaded
# machine; counted and shown), not lost. One with no echo in 10 s is lost and fails the run
# (resent once first, so that the message tells whether ustack still echoes): a datagram
# queued for socat whose wake-up was missed would be read only when the next one arrived,
# which retries after 2 s used to hide.
DRIVER="$NET_TMPD/udp_driver.py"
cat >"$DRIVER" <<'EOF'
import os, socket, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lo, hi = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (1, 1472)
WAIT, SLOW = 10.0, 2.0
s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
deadline = time.monotonic() + 240
slow, worst = 0, 0.0

def echo(data, wait):
    s.sendto(data, (ip, port))
    t0 = time.monotonic()
    while True:
        left = t0 + wait - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            got, frm = s.recvfrom(65536)
        except socket.timeout:
            return None
        if got == data:
            return time.monotonic() - t0
        # a late echo of an earlier datagram: skip it

for i in range(n):
    size = lo + (i * 7919) % (hi - lo + 1)  # every size lo..hi comes up (1..1472 by default)
    data = os.urandom(size)
    t = echo(data, WAIT)
    if t is None:
        again = echo(data, 2.0)
        print("fail datagram %d (%d bytes): no echo in %g s (%s)" % (i, size, WAIT,
              "a resend was echoed" if again is not None else "nor of a resend in 2 s"))
        sys.exit(1)
    slow += t > SLOW
    worst = max(worst, t)
    if time.monotonic() > deadline:
        print("fail: %d datagrams echoed when the 240 s bound ran out" % i)
        sys.exit(1)
print("ok %d slow %d slowest %.0f ms" % (n, slow, worst * 1000))
EOF

REFUSED="$NET_TMPD/udp_refused.py"
cat >"$REFUSED" <<'EOF'
import errno, socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3.0)
s.connect((ip, port))
s.send(b"anyone?")
try:
    s.recv(100)
    print("fail: an answer from a closed port")
except ConnectionRefusedError:
    print("ok ECONNREFUSED")
except socket.timeout:
    print("fail: no ICMP port unreachable in 3 s")
EOF

errtail() {
    { grep '^ustack:' "$1"; tail -n 2 "$1"; } 2>/dev/null | uniq | tr '\n' ' ' | head -c "${2:-300}"
}

# Stops what runs in the ustack namespace and waits (bounded) for its ustackd to go.
u_clean() {
    local kind=$1 p i
    for ((i = 0; i < 100; i++)); do
        [ -z "$(u_stackds)" ] && break
        sleep 0.1
    done
    for p in $(u_stackds); do net__kill_pid "$p" 3; done
    USTACKD_PID=""
    [ "$kind" = af_xdp ] && net_u ip link set "$VETH_U" xdp off 2>/dev/null
    return 0
}

# check_echo KIND [COUNT [CORES [LO HI]]]: datagram sizes LO..HI (default 1..1472; above
# 1472 both directions go as IPv4 fragments).
check_echo() {
    local kind=$1 sp out t0 st
    local serr="$NET_TMPD/socat.$kind.err"
    local n=${2:-$UDP_N} lo=${4:-1} hi=${5:-1472}
    u_env "$kind" "echo.$kind${3:+.$3}"
    [ -n "${3:-}" ] && U_ENV+=("USTACK_CORES=$3")
    # -T: socat ends after 60 s without traffic; the driver's probes keep it busy.
    u_bg "${U_ENV[@]}" timeout -k 2 300 socat -T 60 -b 65536 "UDP4-LISTEN:$P_ECHO,reuseaddr" PIPE \
        </dev/null >/dev/null 2>"$serr"
    sp=$U_BG
    # socat 'connects' to its first sender: the probe and the driver must be one socket. So
    # the probe waits only for ustackd to come up; socat answers the driver's first datagram.
    local end=$((SECONDS + 20))
    while [ -z "$(u_stackds)" ] && proc_alive "$sp" && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
    sleep 1
    u_note_stackd
    if ! proc_alive "$sp"; then
        net_softfail "$kind: socat UDP4-LISTEN under ustack exited at start: $(errtail "$serr")"
        u_clean "$kind"
        return
    fi
    t0=$SECONDS
    out=$(net_k timeout 280 "$PY" "$DRIVER" "$IP_U" "$P_ECHO" "$n" "$lo" "$hi" 2>&1 | tail -n 1) || true
    case "$out" in
    "ok $n"*) net_log "$kind${3:+ cores $3}: echo: $n datagrams of $lo..$hi bytes byte-exact in $((SECONDS - t0)) s (${out#"ok $n "})" ;;
    *) net_softfail "$kind: echo through socat under ustack: ${out:-no output} (socat: $(errtail "$serr"))" ;;
    esac
    check_refused "$kind"
    if [ -n "$USTACKD_PID" ]; then
        ustackd_stats st
        net_log "$kind: ustackd: udp_in $(stat_sum "$st" udp_in) udp_out $(stat_sum "$st" udp_out) udp_drop_rcvbuf $(stat_sum "$st" udp_drop_rcvbuf) udp_drop_csum $(stat_sum "$st" udp_drop_csum) udp_noport $(stat_sum "$st" udp_noport)"
        [ "$(stat_sum "$st" udp_icmp_unreach_out)" -ge 1 ] \
            || net_softfail "$kind: ustackd counted no ICMP port unreachable sent (udp_icmp_unreach_out)"
        [ "$(stat_sum "$st" udp_out)" -ge "$n" ] \
            || net_softfail "$kind: ustackd's udp_out $(stat_sum "$st" udp_out) < $n"
        if [ "$hi" -gt 1472 ]; then
            net_log "$kind: ustackd: ip_reasm_ok $(stat_sum "$st" ip_reasm_ok) ip_frag_ok $(stat_sum "$st" ip_frag_ok) ip_reasm_handoff $(stat_sum "$st" ip_reasm_handoff)"
            [ "$(stat_sum "$st" ip_reasm_ok)" -ge 1 ] && [ "$(stat_sum "$st" ip_frag_ok)" -ge 1 ] \
                || net_softfail "$kind: datagrams above the MTU were not reassembled and fragmented by ustack"
        fi
    fi
    stop_bg "$sp"
    u_clean "$kind"
}

# check_echo6 KIND COUNT [CORES]: `socat UDP6-LISTEN` under ustack (USTACK_IP6) echoes COUNT
# datagrams of 3000 bytes from the kernel over IPv6: both ways as IPv6 fragments (RFC 8200
# 4.5), reassembled and fragmented by ustack (af_packet's defragmenting socket is IPv4-only).
check_echo6() {
    local kind=$1 n=$2 sp out t0 st k
    local serr="$NET_TMPD/socat6.$kind.err"
    local K6="2001:2:0:$NET_X::1" U6="2001:2:0:$NET_X::2"
    for k in "net.ipv6.conf.all.disable_ipv6=0" "net.ipv6.conf.$VETH_K.disable_ipv6=0" \
        "net.ipv6.conf.$VETH_K.accept_dad=0" "net.ipv6.conf.$VETH_K.accept_ra=0"; do
        net_k sysctl -qw "$k" >/dev/null || { net_softfail "$kind: sysctl $k failed"; return; }
    done
    ip -n "$NS_K" -6 addr replace "$K6/64" dev "$VETH_K" nodad 2>/dev/null
    u_env "$kind" "echo6.$kind${3:+.$3}"
    U_ENV+=("USTACK_IP6=$U6/64")
    [ -n "${3:-}" ] && U_ENV+=("USTACK_CORES=$3")
    u_bg "${U_ENV[@]}" timeout -k 2 200 socat -T 60 -b 65536 "UDP6-LISTEN:$P_ECHO,reuseaddr" PIPE \
        </dev/null >/dev/null 2>"$serr"
    sp=$U_BG
    local end=$((SECONDS + 20))
    while [ -z "$(u_stackds)" ] && proc_alive "$sp" && [ "$SECONDS" -lt "$end" ]; do sleep 0.1; done
    sleep 1
    u_note_stackd
    if ! proc_alive "$sp"; then
        net_softfail "$kind: socat UDP6-LISTEN under ustack exited at start: $(errtail "$serr")"
        u_clean "$kind"
        return
    fi
    t0=$SECONDS
    out=$(net_k timeout 150 "$PY" "$DRIVER" "$U6" "$P_ECHO" "$n" 3000 3000 2>&1 | tail -n 1) || true
    case "$out" in
    "ok $n"*) net_log "$kind${3:+ cores $3}: IPv6 echo: $n datagrams of 3000 bytes byte-exact in $((SECONDS - t0)) s (${out#"ok $n "})" ;;
    *) net_softfail "$kind: IPv6 echo through socat under ustack: ${out:-no output} (socat: $(errtail "$serr"))" ;;
    esac
    if [ -n "$USTACKD_PID" ]; then
        ustackd_stats st
        net_log "$kind: ustackd: ip6_reasm_ok $(stat_sum "$st" ip6_reasm_ok) ip6_frag_ok $(stat_sum "$st" ip6_frag_ok) ip6_frag_creates $(stat_sum "$st" ip6_frag_creates) ip6_drop_frag $(stat_sum "$st" ip6_drop_frag)"
        [ "$(stat_sum "$st" ip6_reasm_ok)" -ge "$n" ] && [ "$(stat_sum "$st" ip6_frag_ok)" -ge "$n" ] \
            || net_softfail "$kind: the IPv6 datagrams were not reassembled and fragmented by ustack"
    fi
    stop_bg "$sp"
    u_clean "$kind"
}

check_refused() {
    local kind=$1 out
    out=$(net_k timeout 10 "$PY" "$REFUSED" "$IP_U" "$P_NONE" 2>&1 | tail -n 1) || true
    case "$out" in
    "ok ECONNREFUSED") net_log "$kind: a closed port under ustack refuses (ICMP port unreachable)" ;;
    *) net_softfail "$kind: closed port: ${out:-no output}" ;;
    esac
}

# dnsq ARGS...: one dig from the kernel side to dnsmasq under ustack, one try of up to 10 s;
# its output (stderr too) in DIG_OUT. An answer after 2 s is slow (a loaded machine: shown,
# counted in DNS_SLOW), not a failure; no answer in 10 s is a lost query, and the caller's
# check of the output fails. (dig's second try after 2 s, used before, hid a missed wake-up:
# the retry's arrival wakes the server, which then answers both.)
dnsq() {
    local t0=${EPOCHREALTIME/./} ms
    DIG_OUT=$(net_k dig +time=10 +tries=1 -p "$P_DNS" "@$IP_U" "$@" 2>&1) || true
    ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
    if [ "$ms" -gt 2000 ]; then
        DNS_SLOW=$((DNS_SLOW + 1))
        net_log "dns: slow: dig $* answered in $ms ms"
    fi
}

check_dns() {
    local kind=$1 dp got name want ok=0 end st rx tx
    DNS_SLOW=0
    local derr="$NET_TMPD/dnsmasq.$kind.err"
    if ! command -v dnsmasq >/dev/null 2>&1 || ! command -v dig >/dev/null 2>&1; then
        net_softfail "$kind: dns: dnsmasq or dig missing (tools/deps.sh installs dnsmasq-base, bind9-dnsutils)"
        return
    fi
    u_env "$kind" "dns.$kind"
    # No upstream, no /etc/hosts, no DHCP: answers only from these records. --bind-interfaces
    # with --listen-address makes it bind 198.18.x.2:53 itself (an address the kernel does
    # not have: ustack's); --except-interface=lo keeps it off the kernel's loopback.
    u_bg "${U_ENV[@]}" timeout -k 2 120 dnsmasq --keep-in-foreground --no-daemon --port="$P_DNS" \
        --no-resolv --no-hosts --no-poll --user=root --conf-file=/dev/null --pid-file= \
        --bind-interfaces --listen-address="$IP_U" --except-interface=lo --log-facility=- \
        --address=/one.ustack.test/198.18.7.1 --address=/two.ustack.test/198.18.7.2 \
        --host-record=three.ustack.test,198.18.7.3 --host-record=four.ustack.test,198.18.7.4 \
        --txt-record=txt.ustack.test,"ustack udp" \
        </dev/null >"$derr" 2>&1
    dp=$U_BG
    end=$((SECONDS + 20))
    while [ "$SECONDS" -lt "$end" ] && proc_alive "$dp"; do
        got=$(net_k dig +short +time=1 +tries=1 -p "$P_DNS" "@$IP_U" one.ustack.test A 2>/dev/null) || true
        [ "$got" = 198.18.7.1 ] && break
        sleep 0.3
    done
    u_note_stackd
    if [ "$got" != 198.18.7.1 ]; then
        net_softfail "$kind: dnsmasq under ustack does not answer (got '$got'): $(errtail "$derr" 400)"
        stop_bg "$dp"
        u_clean "$kind"
        return
    fi
    for name in one:198.18.7.1 two:198.18.7.2 three:198.18.7.3 four:198.18.7.4; do
        want=${name#*:}
        dnsq +short "${name%%:*}.ustack.test" A
        got=$DIG_OUT
        if [ "$got" = "$want" ]; then ok=$((ok + 1)); else
            net_softfail "$kind: dns: ${name%%:*}.ustack.test A: '$got', want $want"
        fi
    done
    dnsq +short txt.ustack.test TXT
    got=$DIG_OUT
    if [ "$got" = '"ustack udp"' ]; then ok=$((ok + 1)); else
        net_softfail "$kind: dns: txt.ustack.test TXT: '$got'"
    fi
    # A name it has no record for: NXDOMAIN (no upstream to ask).
    dnsq nothing.ustack.test A
    got=$(grep -o 'status: [A-Z]*' <<<"$DIG_OUT") || true
    if [ "$got" = "status: NXDOMAIN" ] || [ "$got" = "status: REFUSED" ]; then ok=$((ok + 1)); else
        net_softfail "$kind: dns: nothing.ustack.test: '$got', want NXDOMAIN"
    fi
    # TCP too: dig +tcp (dnsmasq's TCP listener is on ustack as well).
    dnsq +short +tcp two.ustack.test A
    got=$DIG_OUT
    if [ "$got" = 198.18.7.2 ]; then ok=$((ok + 1)); else
        net_softfail "$kind: dns over TCP: two.ustack.test A: '$got'"
    fi
    [ "$ok" = 7 ] && net_log "$kind: dnsmasq under ustack answered 7 queries correctly (A x4, TXT, NXDOMAIN, A over TCP; $DNS_SLOW slow)"
    # Nothing left unanswered: every datagram moved into dnsmasq's ring (the probes' too) was
    # answered by now; a missed wake-up leaves one unread.
    if [ -n "$USTACKD_PID" ] && proc_alive "$USTACKD_PID"; then
        ustackd_stats st
        rx=$(stat_sum "$st" shm_udp_rx) tx=$(stat_sum "$st" shm_udp_tx)
        net_log "$kind: dns: ustackd queued $rx datagrams for dnsmasq, it sent $tx; $(stat_sum "$st" shm_efd_writes) eventfd wake-ups, $(stat_sum "$st" loop_stalls) stalls of the stack core ($(($(stat_sum "$st" loop_stall_us) / 1000)) ms)"
        if [ "$rx" -lt 5 ] || [ "$tx" != "$rx" ]; then
            net_softfail "$kind: dns: ustackd queued $rx datagrams for dnsmasq and it answered $tx"
        fi
    fi
    proc_alive "$dp" || net_softfail "$kind: dnsmasq exited during the test: $(errtail "$derr")"
    stop_bg "$dp"
    u_clean "$kind"
}

DNSMASQ_RECORDS=(--address=/one.ustack.test/198.18.7.1 "--host-record=four.ustack.test,198.18.7.4")

# A kernel dnsmasq (namespace runner $1: net_k or net_u) on address $2; its pid in KDNS.
kdns_start() {
    local run=$1 addr=$2
    $run timeout -k 2 120 dnsmasq --keep-in-foreground --no-daemon --no-resolv --no-hosts \
        --no-poll --user=root --conf-file=/dev/null --pid-file= --bind-interfaces \
        --listen-address="$addr" "${DNSMASQ_RECORDS[@]}" </dev/null >"$NET_TMPD/kdns.$addr.log" 2>&1 &
    KDNS=$!
    net_bg "$KDNS"
    local end=$((SECONDS + 10))
    while [ "$SECONDS" -lt "$end" ]; do
        [ "$($run dig +short +time=1 +tries=1 "@$addr" one.ustack.test A 2>/dev/null)" = 198.18.7.1 ] && return 0
        sleep 0.2
    done
    return 1
}

check_resolver() {
    local kind=$1 got rerr="$NET_TMPD/resolver.$1.err"
    if ! command -v dnsmasq >/dev/null 2>&1 || ! command -v dig >/dev/null 2>&1; then
        net_softfail "$kind: resolver: dnsmasq or dig missing"
        return
    fi
    mkdir -p "/etc/netns/$NS_U"
    # Through ustack: the nameserver is on ustack's subnet.
    echo "nameserver $IP_K" >"/etc/netns/$NS_U/resolv.conf"
    if ! kdns_start net_k "$IP_K"; then
        net_softfail "$kind: resolver: the kernel-side dnsmasq does not answer"
        return
    fi
    u_env "$kind" "resolver.$kind"
    # One try of up to 10 s, as dnsq: a slow answer passes, a lost one does not.
    got=$(u_exec "${U_ENV[@]}" timeout 30 dig +short +time=10 +tries=1 "@$IP_K" four.ustack.test A 2>"$rerr") || true
    u_note_stackd
    if [ "$got" = 198.18.7.4 ]; then
        net_log "$kind: dig under ustack resolved four.ustack.test through ustack (libuv's syscall mmsg)"
    else
        net_softfail "$kind: dig under ustack: '$got': $(errtail "$rerr")"
    fi
    stop_bg "$KDNS"
    u_clean "$kind"
    # Through the kernel: a loopback nameserver (the resolver's socket is handed over).
    echo "nameserver 127.0.0.1" >"/etc/netns/$NS_U/resolv.conf"
    if ! kdns_start net_u 127.0.0.1; then
        net_softfail "$kind: resolver: the loopback dnsmasq does not answer"
        return
    fi
    u_env "$kind" "resolver-lo.$kind"
    got=$(u_exec "${U_ENV[@]}" timeout 30 getent hosts one.ustack.test 2>"$rerr" | awk 'NR == 1 { print $1 }') || true
    if [ "$got" = 198.18.7.1 ]; then
        net_log "$kind: glibc's resolver under the library (kernel sockets) resolved through a loopback nameserver"
    else
        net_softfail "$kind: resolver through loopback: getent gave '$got': $(errtail "$rerr")"
    fi
    stop_bg "$KDNS"
    u_clean "$kind"
    rm -rf "/etc/netns/$NS_U"
}

# What a UDP socket's fd is under the library: "socket:[...]" (kernel) or
# "anon_inode:[eventfd]" (ustack); or the error.
UDPKIND='import os, socket
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print(os.readlink("/proc/self/fd/%d" % s.fileno()))
except OSError as e:
    print("error", e.errno)'

check_switch() {
    local kind=$1 got
    u_env "$kind" "switch.$kind"
    got=$(u_exec "${U_ENV[@]}" USTACK_UDP=0 timeout 20 "$PY" -c "$UDPKIND" 2>/dev/null) || true
    case "$got" in
    socket:*) net_log "$kind: USTACK_UDP=0: a UDP socket is the kernel's ($got)" ;;
    *) net_softfail "$kind: USTACK_UDP=0: a UDP socket is '$got', not a kernel socket" ;;
    esac
    got=$(u_exec "${U_ENV[@]}" timeout 20 "$PY" -c "$UDPKIND" 2>/dev/null) || true
    case "$got" in
    anon_inode:*eventfd*) net_log "$kind: by default a UDP socket is ustack's ($got)" ;;
    *) net_softfail "$kind: default: a UDP socket is '$got', not ustack's eventfd" ;;
    esac
    u_clean "$kind"
    got=$(u_exec "${U_ENV[@]}" USTACK_UDP=maybe timeout 20 "$PY" -c "$UDPKIND" 2>"$NET_TMPD/switch.err") || true
    if [ "$got" = "error 22" ] && grep -q 'USTACK_UDP=maybe' "$NET_TMPD/switch.err"; then
        net_log "$kind: USTACK_UDP=maybe: socket() fails with EINVAL and names the variable"
    else
        net_softfail "$kind: USTACK_UDP=maybe: '$got', stderr '$(head -c 200 "$NET_TMPD/switch.err")'"
    fi
}

for kind in ${NET_KINDS:-af_packet af_xdp}; do
    net_flush_neigh
    check_echo "$kind"
    net_flush_neigh
    check_dns "$kind"
    net_flush_neigh
    check_echo6 "$kind" 100
done
kind=${NET_KINDS:-af_packet}
kind=${kind%% *}
net_flush_neigh
check_resolver "$kind"
check_switch "$kind"
# Two stack cores on one queue: every UDP frame is steered to core 0, where UDP sockets
# live (docs/architecture.md "UDP"). Skipped with fewer than 2 CPUs (the rest still ran).
if [ "$(nproc)" -ge 2 ]; then
    net_flush_neigh
    check_echo af_packet $((UDP_N / 5)) 0,1
    # Datagrams above the MTU, fragmented both ways, reassembled on whichever core the
    # fragments hash to and handed to core 0 (af_xdp: af_packet's socket defragments).
    net_flush_neigh
    check_echo af_xdp 300 0,1 1473 9000
    # IPv6 fragments all go to core 0 (no ports to steer by), where UDP lives.
    net_flush_neigh
    check_echo6 af_xdp 100 0,1
fi
net_finish
