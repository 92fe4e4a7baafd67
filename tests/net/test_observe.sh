#!/bin/bash
# Observability of a real server (docs/observability.md): stock nginx under
# LD_PRELOAD=libustack.so (af_xdp, one worker), its spawned ustackd named by USTACK_NAME and
# capturing with USTACK_PCAP. Two runs:
#   1. USTACK_PCAP with the default bound. `ab -n N -c C` (no keep-alive) from the kernel
#      side: 0 failed, and /ustack/stats' tcp_passive_opens and shm_accepts each grew by
#      at least N. A kernel-side client then holds K keep-alive connections (each served a
#      request): /ustack/conns lists K ESTABLISHED connections to port 80 whose remote
#      ports are exactly the client's; pcap_frames > 0 and pcap_dropped = 0. nginx stops,
#      ustackd exits (writing the rest of the capture), and tcpdump reads the file without
#      a complaint: at least N + K distinct SYNs to port 80 (by port and sequence number),
#      as many SYN-ACKs back, frames in both directions, the client's K ports among the
#      SYNs, and every data segment from ustack has a correct TCP checksum.
#   2. USTACK_PCAP_MAX=64K, two stack cores when there are two CPUs (af_packet with a
#      queue per core, so both cores receive and write): after ab, each core captured
#      frames, pcap_dropped > 0, the file is at most 65536 bytes and 24 + pcap_bytes long,
#      tcpdump reads it without a complaint, and it holds exactly pcap_frames frames.
# Knobs: LIBUSTACK, NGINX, NET_OBSERVE_REQS / NET_OBSERVE_CONC (ab -n / -c, 1000 / 50),
# NET_OBSERVE_CONNS (K, 20). About 20-30 s.
# net-timeout: 150
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init observe 19
net_require_tools curl ab python3 tcpdump
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
NGINX=${NGINX:-$(command -v nginx || true)}
{ [ -n "$NGINX" ] && [ -x "$NGINX" ]; } || net_fail "nginx not found (tools/deps.sh installs nginx-light)"
STAT="$NET_ROOT/tools/ustack-stat"
REQS=${NET_OBSERVE_REQS:-1000} CONC=${NET_OBSERVE_CONC:-50} K=${NET_OBSERVE_CONNS:-20}
AB_SECS=40
SMALL=65536

ngx_prefix
echo '<html><body>observed</body></html>' >"$PREFIX/www/index.html"
ngx_conf 4096 "" '    default_type text/html;
    access_log off;
    keepalive_timeout 60;' '        listen 80;'
chmod -R a+rX "$NET_TMPD"
out=$(timeout 10 "$NGINX" -t "${NGX_ARGS[@]}" 2>&1) || net_fail "nginx -t refused the configuration: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"


# A kernel-side client: K connections to port 80, one keep-alive GET on each (response read
# whole), prints "ready <ports>", then holds them until stdin closes (at most 60 s).
cat >"$NET_TMPD/hold.py" <<'EOF'
import socket, sys, select
ip, n = sys.argv[1], int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.create_connection((ip, 80), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: ustack\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        c = s.recv(4096)
        if not c:
            sys.exit("connection %d closed early" % i)
        data += c
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("connection %d: %r" % (i, head[:40]))
    ln = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    while len(body) < ln:
        c = s.recv(4096)
        if not c:
            sys.exit("connection %d: body cut" % i)
        body += c
    socks.append(s)
print("ready", " ".join(str(s.getsockname()[1]) for s in socks), flush=True)
select.select([sys.stdin], [], [], 60)
EOF

# tel SOCK CMD: one telemetry reply as JSON (ustack-stat's protocol code).
tel() { "$STAT" -n "$1" --json "$2"; }
# jval JSON KEY
jval() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

u_comm_pids() {
    local p
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && echo "$p"
    done
    return 0
}

NGX_MASTER=""
# nginx_start NAME DEV CORES EXTRA-ENV...: nginx under ustack; waits until it answers and
# sets USTACKD_PID to the ustackd it spawned.
nginx_start() {
    local name=$1 dev=$2 cores=$3 t0 code="" i
    shift 3
    USTACKD_OUT="$NET_TMPD/stackd.$name.log"
    local -a env=("LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$dev" "USTACK_IP=$IP_U/24"
        "USTACK_CORES=$cores" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT"
        "USTACK_NAME=$name" "$@")
    [ -n "${NET_USTACK_EAL:-}" ] && env+=("USTACK_EAL=$NET_USTACK_EAL")
    [ -n "${NET_USTACK_LOG:-}" ] && env+=("USTACK_LOG=$NET_USTACK_LOG")
    net_log "start nginx: ${env[*]}"
    # shellcheck disable=SC2016
    ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
        exec env "$@"' sh "${NET_BPFFS:-1}" "${env[@]}" "$NGINX" "${NGX_ARGS[@]}" \
        >"$NET_TMPD/nginx.$name.out" 2>"$NET_TMPD/nginx.$name.err" </dev/null &
    NGX_MASTER=$!
    net_bg "$NGX_MASTER"
    t0=$(ms_now)
    while [ $(($(ms_now) - t0)) -lt 30000 ]; do
        proc_alive "$NGX_MASTER" || net_fail "nginx exited: $(tail -n 2 "$NET_TMPD/nginx.$name.err" | tr '\n' ' ')"
        code=$(net_k timeout 5 curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$IP_U/" 2>/dev/null) || true
        [ "$code" = 200 ] && break
        sleep 0.2
    done
    [ "$code" = 200 ] || net_fail "nginx under ustack did not answer within 30 s (HTTP '$code')"
    USTACKD_PID=$(u_comm_pids ustackd | head -n 1)
    [ -n "$USTACKD_PID" ] || net_fail "no ustackd in the ustack namespace"
    NET_USTACKD_PIDS="$NET_USTACKD_PIDS $USTACKD_PID"
    for ((i = 0; i < 50; i++)); do
        [ -S "/var/run/dpdk/ustack-$name/dpdk_telemetry.v2" ] && break
        sleep 0.1
    done
    net_log "nginx ready after $(($(ms_now) - t0)) ms, ustackd $USTACKD_PID"
}

# nginx_stop: SIGQUIT to the master; nginx and then its ustackd (no client left) must exit
# within 15 s each, so the capture is complete.
nginx_stop() {
    local i
    kill -QUIT "$NGX_MASTER" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do proc_alive "$NGX_MASTER" || break; sleep 0.1; done
    proc_alive "$NGX_MASTER" && { net_softfail "nginx did not stop within 15 s"; kill -KILL "$NGX_MASTER"; }
    wait "$NGX_MASTER" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do proc_alive "$USTACKD_PID" || break; sleep 0.1; done
    proc_alive "$USTACKD_PID" && net_fail "ustackd $USTACKD_PID did not exit within 15 s of nginx"
    USTACKD_PID=""
}

# run_ab TAG: ab -n REQS -c CONC without keep-alive; soft-fails unless all complete.
run_ab() {
    local out="$NET_TMPD/ab.$1.out" rc=0 complete failed
    net_k timeout -k 5 "$AB_SECS" ab -n "$REQS" -c "$CONC" "http://$IP_U/" >"$out" 2>"$NET_TMPD/ab.$1.err" </dev/null || rc=$?
    complete=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$out")
    failed=$(sed -n 's/^Failed requests: *\([0-9]*\).*/\1/p' "$out")
    if [ "$rc" != 0 ] || [ "$complete" != "$REQS" ] || [ "$failed" != 0 ]; then
        net_softfail "ab -n $REQS -c $CONC: exit $rc, complete '$complete', failed '$failed': $(tail -n 2 "$NET_TMPD/ab.$1.err" | tr '\n' ' ')"
    else
        net_log "ab -n $REQS -c $CONC: $complete complete, 0 failed ($(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$out") req/s)"
    fi
}

# pcap_read FILE: tcpdump's reading of the file into FILE.txt; fails on any complaint.
pcap_read() {
    local rc=0
    tcpdump -nn -tt -r "$1" >"$1.txt" 2>"$1.err" || rc=$?
    if [ "$rc" != 0 ] || grep -qiv '^reading from file' "$1.err"; then
        net_softfail "tcpdump -r $(basename "$1"): exit $rc: $(tr '\n' ' ' <"$1.err" | head -c 300)"
        return 1
    fi
    grep -q 'link-type EN10MB (Ethernet), snapshot length 65535' "$1.err" ||
        net_softfail "tcpdump: unexpected header: $(head -n 1 "$1.err")"
    return 0
}

# ---- 1. default bound: counters, the connection table, the handshakes in the capture
NAME1="obs$$a"
CAP1="$NET_TMPD/run1.pcap"
nginx_start "$NAME1" "$(net_dev af_xdp)" 0 "USTACK_PCAP=$CAP1"
cfg=$(tel "$NAME1" /ustack/config)
[ "$(jval "$cfg" USTACK_PCAP)" = "$CAP1" ] && [ "$(jval "$cfg" USTACK_PCAP_MAX)" = $((64 << 20)) ] ||
    net_softfail "/ustack/config: USTACK_PCAP '$(jval "$cfg" USTACK_PCAP)' USTACK_PCAP_MAX '$(jval "$cfg" USTACK_PCAP_MAX)'"

st0=$(tel "$NAME1" /ustack/stats)
run_ab close
st1=$(tel "$NAME1" /ustack/stats)
for ctr in tcp_passive_opens shm_accepts; do
    d=$(($(jval "$st1" $ctr) - $(jval "$st0" $ctr)))
    if [ "$d" -ge "$REQS" ]; then
        net_log "/ustack/stats: $ctr grew by $d (>= $REQS)"
    else
        net_softfail "/ustack/stats: $ctr grew by $d during ab -n $REQS"
    fi
done

HOLD_IN="$NET_TMPD/hold.in"
mkfifo "$HOLD_IN"
net_k timeout 90 python3 "$NET_TMPD/hold.py" "$IP_U" "$K" <"$HOLD_IN" >"$NET_TMPD/hold.out" 2>"$NET_TMPD/hold.err" &
HOLD_PID=$!
net_bg "$HOLD_PID"
exec 7>"$HOLD_IN"
wait_until 30 grep -q '^ready' "$NET_TMPD/hold.out" ||
    net_fail "keep-alive client not ready: $(head -c 300 "$NET_TMPD/hold.err")"
out=$(python3 - "$STAT" "/var/run/dpdk/ustack-$NAME1/dpdk_telemetry.v2" "$IP_U" "$IP_K" "$NET_TMPD/hold.out" <<'EOF'
import importlib.machinery, importlib.util, sys
stat, sock, ip_u, ip_k, hold = sys.argv[1:]
loader = importlib.machinery.SourceFileLoader("ustack_stat", stat)
spec = importlib.util.spec_from_loader("ustack_stat", loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
rows = m.fetch_conns(m.Telemetry(sock))
ports = sorted(int(p) for p in open(hold).read().split()[1:])
est = [r for r in rows if r["state"] == "ESTABLISHED" and r["local"] == ip_u + ":80"
       and r["remote"].startswith(ip_k + ":")]
got = sorted(int(r["remote"].rsplit(":", 1)[1]) for r in est)
if got != ports:
    print("ESTABLISHED remote ports %s (of %d rows) differ from the client's %s" % (got[:8], len(rows), ports[:8]))
else:
    print("ok %d %d" % (len(got), len(rows)))
EOF
) || out="checker failed: $out"
case $out in
"ok $K "*) net_log "/ustack/conns: exactly the client's $K keep-alive connections ESTABLISHED (${out##* } rows in all)" ;;
*) net_softfail "/ustack/conns: $out" ;;
esac
HOLD_PORTS=$(cut -d' ' -f2- "$NET_TMPD/hold.out")
st2=$(tel "$NAME1" /ustack/stats)
frames=$(jval "$st2" pcap_frames) dropped=$(jval "$st2" pcap_dropped)
[ "$frames" -gt 0 ] && [ "$dropped" = 0 ] && net_log "/ustack/stats: pcap_frames=$frames pcap_dropped=0" ||
    net_softfail "/ustack/stats: pcap_frames=$frames pcap_dropped=$dropped, expected > 0 and 0"
exec 7>&-
wait "$HOLD_PID" 2>/dev/null || true
nginx_stop

if pcap_read "$CAP1"; then
    t="$CAP1.txt"
    # A SYN is told from its retransmissions by port and sequence number (the kernel may
    # reuse a port once ustack, the side that closed, holds the old connection in TIME-WAIT).
    syn=$(awk -v k="$IP_K" -v u="$IP_U.80:" '$2 == "IP" && index($3, k ".") == 1 && $5 == u &&
        $7 == "[S]," { print $3, $9 }' "$t" | sort -u | wc -l)
    synack=$(awk -v k="$IP_K" -v u="$IP_U.80" '$2 == "IP" && $3 == u && index($5, k ".") == 1 &&
        $7 == "[S.]," { print $5, $11 }' "$t" | sort -u | wc -l)
    from_k=$(grep -c "IP $IP_K\." "$t" || true)
    from_u=$(grep -c "IP $IP_U\." "$t" || true)
    missing=""
    for p in $HOLD_PORTS; do
        grep -qE "IP $IP_K\.$p > $IP_U\.80: Flags \[S\]," "$t" || missing="$missing $p"
    done
    if [ "$syn" -ge $((REQS + K)) ] && [ "$synack" -ge $((REQS + K)) ] && [ "$from_k" -gt 0 ] &&
        [ "$from_u" -gt 0 ] && [ -z "$missing" ]; then
        net_log "capture: $(wc -l <"$t") frames, $syn distinct SYNs, $synack SYN-ACKs, $from_k from the kernel side, $from_u from ustack, the client's $K ports all there ($(stat -c %s "$CAP1") bytes)"
    else
        net_softfail "capture: $syn SYNs, $synack SYN-ACKs (expected >= $((REQS + K)) each), $from_k/$from_u frames per side, client ports missing:${missing:- none}"
    fi
    # The responses' TCP checksums in the file are the ones sent (dio__tx completes them
    # while copying the payload, STK_TX_L4_SUM, and captures the finished frame).
    sums=$(tcpdump -nn -vv -r "$CAP1" "src host $IP_U and tcp and greater 200" 2>/dev/null |
        grep -o 'cksum 0x[0-9a-f]* ([a-z]*' | awk '{print $3}' | sort | uniq -c | tr -s ' \n' ' ')
    case " $sums " in
    *incorrect*) net_softfail "capture: data segments from ustack with bad TCP checksums:$sums" ;;
    *" (correct "*) net_log "capture: TCP checksums of ustack's data segments:$sums" ;;
    *) net_softfail "capture: no checked TCP checksum of a data segment from ustack ($sums)" ;;
    esac
fi

# ---- 2. a small bound, two cores when possible: the file stays within it and parses
NAME2="obs$$b"
CAP2="$NET_TMPD/run2.pcap"
CORES=0 DEV2=$(net_dev af_xdp)
[ "$(nproc)" -ge 2 ] && CORES=0,1 DEV2=$(net_dev af_packet_q2)
nginx_start "$NAME2" "$DEV2" "$CORES" "USTACK_PCAP=$CAP2" "USTACK_PCAP_MAX=64K"
REQS=500 CONC=20
run_ab small
sleep 0.5 # every core idle once: its buffer is written
st=$(tel "$NAME2" /ustack/stats)
frames=$(jval "$st" pcap_frames) bytes=$(jval "$st" pcap_bytes) dropped=$(jval "$st" pcap_dropped)
if [ "$CORES" = 0,1 ]; then
    # Each core captured what it received and sent (written, or counted as dropped).
    for c in 0 1; do
        sc=$(tel "$NAME2" "/ustack/stats,$c")
        seen=$(($(jval "$sc" pcap_frames) + $(jval "$sc" pcap_dropped)))
        [ "$seen" -gt 0 ] || net_softfail "core $c captured nothing (pcap_frames + pcap_dropped = 0)"
    done
fi
nginx_stop
size=$(stat -c %s "$CAP2")
if [ "$dropped" -gt 0 ] && [ "$size" -le "$SMALL" ] && [ "$size" = $((24 + bytes)) ]; then
    net_log "USTACK_PCAP_MAX=64K on $CORES: $size bytes (24 + pcap_bytes), pcap_frames=$frames, pcap_dropped=$dropped"
else
    net_softfail "USTACK_PCAP_MAX=64K: file $size bytes, pcap_bytes=$bytes, pcap_dropped=$dropped (expected <= $SMALL, 24 + pcap_bytes, > 0)"
fi
if pcap_read "$CAP2"; then
    n=$(wc -l <"$CAP2.txt")
    [ "$n" = "$frames" ] && net_log "the bounded capture parses: $n frames = pcap_frames" ||
        net_softfail "the bounded capture holds $n frames, pcap_frames says $frames"
fi
net_finish
