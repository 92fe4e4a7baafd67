#!/bin/bash
# ustackd's DPDK telemetry (docs/observability.md), af_packet, two runs:
#   1. ustackd --echo 7 with USTACK_NAME: the kernel side opens N connections to the echo
#      service and holds them (each echoed a line, so every one is established). Then
#      /ustack/stats shows tcp_passive_opens >= N and conns_established = N,
#      /ustack/conns lists exactly the N connections with the kernel's addresses and ports
#      (and the listener), paged through when N exceeds a page, /ustack/config names the
#      instance, tools/ustack-stat finds the instance and prints the N connections, and
#      Debian's dpdk-telemetry.py -f ustack-<name> answers a command read from its stdin.
#      A second ustackd with the same name is refused, naming the holder.
#   2. socat under LD_PRELOAD=libustack.so ($LIBUSTACK; its ustackd, the one beside the
#      library, is spawned, unnamed: file prefix ustack-<pid>): N held connections again, listed by /ustack/conns and ustack-stat,
#      and the shared-memory server's counters (shm_accepts >= N) are in /ustack/stats.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init telemetry 18
net_require_tools python3 socat
STAT="$NET_ROOT/tools/ustack-stat"
DPDK_TEL=$(command -v dpdk-telemetry.py || true)
[ -n "$DPDK_TEL" ] || net_fail "dpdk-telemetry.py not found (Debian package dpdk-dev)"
LIB=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -e "$LIB" ] || net_fail "$LIB not built"
N=${NET_TELEMETRY_CONNS:-50}
NAME="tel$$"

# A kernel-side program that opens N connections to PORT, sends a line on each, waits for
# every echo (the first connect retried for 20 s while refused), reports the local ports on stdout ("ready p1 p2 ..."), then holds them open
# until stdin closes (bounded by 60 s).
cat >"$NET_TMPD/hold.py" <<'EOF'
import socket, sys, select, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
end = time.monotonic() + 20
for i in range(n):
    while True:
        try:
            s = socket.create_connection((ip, port), timeout=10)
            break
        except ConnectionRefusedError:
            # The server may not listen yet (a spawned ustackd starting).
            if i > 0 or time.monotonic() > end:
                raise
            time.sleep(0.2)
    s.sendall(b"hello %d\n" % i)
    socks.append(s)
for i, s in enumerate(socks):
    want = b"hello %d\n" % i
    got = b""
    while len(got) < len(want):
        b = s.recv(len(want) - len(got))
        if not b:
            sys.exit("connection %d closed before its echo" % i)
        got += b
    if got != want:
        sys.exit("connection %d: echo %r" % (i, got))
print("ready", " ".join(str(s.getsockname()[1]) for s in socks), flush=True)
select.select([sys.stdin], [], [], 60)
EOF

HOLD_PID=""
HOLD_IN=""
# hold_start PORT: run hold.py in the kernel namespace; waits (30 s) for "ready".
hold_start() {
    local i
    HOLD_IN="$NET_TMPD/hold.in"
    rm -f "$HOLD_IN"
    mkfifo "$HOLD_IN"
    net_k timeout 90 python3 "$NET_TMPD/hold.py" "$IP_U" "$1" "$N" \
        <"$HOLD_IN" >"$NET_TMPD/hold.out" 2>"$NET_TMPD/hold.err" &
    HOLD_PID=$!
    net_bg "$HOLD_PID"
    exec 7>"$HOLD_IN" # keeps the holder's stdin open
    for ((i = 0; i < 300; i++)); do
        grep -q '^ready' "$NET_TMPD/hold.out" 2>/dev/null && return 0
        proc_alive "$HOLD_PID" || net_fail "holder failed: $(head -c 300 "$NET_TMPD/hold.err")"
        sleep 0.1
    done
    net_fail "holder not ready within 30 s"
}
hold_stop() {
    exec 7>&-
    wait "$HOLD_PID" 2>/dev/null || true
    HOLD_PID=""
}

# check_conns SOCKET PORT NCORES: /ustack/conns (all pages, read with ustack-stat's code)
# lists exactly the holder's N connections to PORT, established, with the right addresses,
# and the listener (one per core).
check_conns() {
    local sock=$1 port=$2 out
    out=$(python3 - "$STAT" "$sock" "$IP_U" "$IP_K" "$port" "$NET_TMPD/hold.out" "$3" <<'EOF'
import importlib.machinery, importlib.util, sys
stat, sock, ip_u, ip_k, port, hold, ncores = sys.argv[1:]
loader = importlib.machinery.SourceFileLoader("ustack_stat", stat)
spec = importlib.util.spec_from_loader("ustack_stat", loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
t = m.Telemetry(sock)
rows = m.fetch_conns(t)
first = t.query("/ustack/conns,0")
ports = sorted(int(p) for p in open(hold).read().split()[1:])
listen = [r for r in rows if r["state"] == "LISTEN" and r["local"].endswith(":" + port)]
conns = [r for r in rows if r["state"] != "LISTEN"]
errs = []
if sorted(r["core"] for r in listen) != list(range(int(ncores))):
    errs.append("listeners on port %s: %s" % (port, listen))
if int(first["total"]) != len(rows):
    errs.append("total %s but %d rows read" % (first["total"], len(rows)))
bad = [r for r in conns if r["state"] != "ESTABLISHED" or r["local"] != "%s:%s" % (ip_u, port)
       or not r["remote"].startswith(ip_k + ":")]
if bad:
    errs.append("unexpected rows: %s" % bad[:3])
got = sorted(int(r["remote"].rsplit(":", 1)[1]) for r in conns)
if got != ports:
    errs.append("remote ports %s... differ from the holder's %s..." % (got[:5], ports[:5]))
if any(r["rtt_us"] <= 0 or r["cwnd"] <= 0 or r["bytes_received"] < 8 for r in conns):
    errs.append("a connection without rtt, cwnd or received bytes")
print("; ".join(errs) if errs else "ok %d" % len(conns))
EOF
    ) || out="checker failed: $out"
    [ "$out" = "ok $N" ] && net_log "/ustack/conns: the $N connections, right addresses" \
        || net_softfail "/ustack/conns: $out"
}

# stat_val JSON KEY
stat_val() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# ---- 1. the echo service, named instance (two cores when there are two CPUs)
net_flush_neigh
NCORES=1
[ "$(nproc)" -ge 2 ] && U_CORES=0,1 && NCORES=2
USTACK_NAME=$NAME
export USTACK_NAME
ustackd_start "$(net_dev af_packet)" --echo 7
unset USTACK_NAME
SOCK=/var/run/dpdk/ustack-$NAME/dpdk_telemetry.v2
wait_until 5 test -S "$SOCK" || net_fail "no telemetry socket $SOCK"
hold_start 7

st=$("$STAT" -n "$NAME" --json /ustack/stats)
po=$(stat_val "$st" tcp_passive_opens)
est=$(stat_val "$st" conns_established)
if [ "$po" -ge "$N" ] && [ "$est" = "$N" ]; then
    net_log "/ustack/stats: tcp_passive_opens=$po conns_established=$est"
else
    net_softfail "/ustack/stats: tcp_passive_opens=$po conns_established=$est, expected >= $N and $N"
fi
check_conns "$SOCK" 7 "$NCORES"
if [ "$NCORES" = 2 ]; then
    # Software steering spreads the connections over both cores (by the hash of each
    # 4-tuple; 50 all on one core would be a 1 in 2^49 chance).
    e0=$(stat_val "$("$STAT" -n "$NAME" --json /ustack/stats,0)" conns_established)
    e1=$(stat_val "$("$STAT" -n "$NAME" --json /ustack/stats,1)" conns_established)
    [ $((e0 + e1)) = "$N" ] && [ "$e0" -gt 0 ] && [ "$e1" -gt 0 ] &&
        net_log "/ustack/stats,0 and ,1: $e0 + $e1 established" ||
        net_softfail "/ustack/stats per core: $e0 + $e1 established, expected both > 0, sum $N"
fi
cfg=$("$STAT" -n "$NAME" --json /ustack/config)
[ "$(stat_val "$cfg" file_prefix)" = "ustack-$NAME" ] && [ "$(stat_val "$cfg" pid)" = "$USTACKD_PID" ] &&
    [ "$(stat_val "$cfg" USTACK_IP)" = "$IP_U/24" ] ||
    net_softfail "/ustack/config: $(head -c 300 <<<"$cfg")"

# ustack-stat: the instance in the list, and the connections as ss would print them.
"$STAT" -l >"$NET_TMPD/list.out" 2>&1 || true
grep -Eq "^ustack-$NAME +$USTACKD_PID +net_af_packet0" "$NET_TMPD/list.out" ||
    net_softfail "ustack-stat -l does not list ustack-$NAME: $(head -c 300 "$NET_TMPD/list.out")"
"$STAT" -n "$NAME" -i 0.2 -k 2 >"$NET_TMPD/stat.out" 2>&1 || net_softfail "ustack-stat failed: $(tail -c 300 "$NET_TMPD/stat.out")"
shown=$(grep -Ec "^ESTAB +0 +0 +$IP_U:7 +$IP_K:[0-9]+ +[01]\$" "$NET_TMPD/stat.out" || true)
[ "$shown" = $((2 * N)) ] && grep -q "tcp_passive_opens" "$NET_TMPD/stat.out" &&
    net_log "ustack-stat printed the $N connections twice (-i 0.2 -k 2) and the counters" ||
    net_softfail "ustack-stat printed $shown ESTAB lines, expected $((2 * N))"

# Stock dpdk-telemetry.py, commands on its stdin.
printf '/ustack/stats\n' | timeout 20 "$DPDK_TEL" -f "ustack-$NAME" >"$NET_TMPD/dt.out" 2>&1 || true
grep -Eq "\"tcp_passive_opens\": $po\b" "$NET_TMPD/dt.out" &&
    net_log "dpdk-telemetry.py -f ustack-$NAME: /ustack/stats answered" ||
    net_softfail "dpdk-telemetry.py: $(tr '\n' ' ' <"$NET_TMPD/dt.out" | tail -c 300)"

# The name is taken while this ustackd runs.
net_u env USTACK_NAME="$NAME" USTACK_DEV="net_af_packet1,iface=$VETH_U" USTACK_IP="$IP_U/24" \
    timeout 20 "$USTACKD" >"$NET_TMPD/dup.out" 2>&1 && net_softfail "a second ustackd named $NAME started" ||
    grep -q "USTACK_NAME=$NAME: the name is in use by ustackd pid $USTACKD_PID" "$NET_TMPD/dup.out" ||
    net_softfail "second ustackd named $NAME: $(head -c 300 "$NET_TMPD/dup.out")"
# Clients querying while the connections close and while ustackd stops: it must stop
# cleanly (exit 0, in time) with telemetry callbacks in flight.
cat >"$NET_TMPD/query.py" <<'EOF'
import importlib.machinery, importlib.util, sys, time
loader = importlib.machinery.SourceFileLoader("ustack_stat", sys.argv[1])
spec = importlib.util.spec_from_loader("ustack_stat", loader)
m = importlib.util.module_from_spec(spec)
loader.exec_module(m)
t, n, end = m.Telemetry(sys.argv[2]), 0, time.monotonic() + 30
how = "timeout"
try:
    while time.monotonic() < end:
        if t.query("/ustack/conns,0") is None or t.query("/ustack/stats") is None:
            how = "error-reply"  # e.g. "ustackd is stopping"
        n += 1
        if n == 1:
            open(sys.argv[3], "w").close()
except (OSError, ValueError):
    how = "gone"  # ustackd went away
print(how, n)
EOF
QPIDS=""
for j in 1 2 3; do
    # (7>&-: the holder must see its stdin close when hold_stop closes fd 7)
    python3 "$NET_TMPD/query.py" "$STAT" "$SOCK" "$NET_TMPD/query.$j.started" \
        >"$NET_TMPD/query.$j.out" 2>&1 7>&- &
    net_bg $!
    QPIDS="$QPIDS $!"
done
wait_until 20 test -e "$NET_TMPD/query.1.started" -a -e "$NET_TMPD/query.2.started" \
    -a -e "$NET_TMPD/query.3.started" || net_fail "telemetry query clients did not start"
sleep 0.5
hold_stop
sleep 0.5
t0=$SECONDS
ustackd_stop
for p in $QPIDS; do wait "$p" 2>/dev/null || true; done
q=$(cat "$NET_TMPD"/query.*.out | tr '\n' ' ')
# Each ends when ustackd goes: "gone" (connection closed) or "error-reply" (a reply
# that ustackd is stopping came first).
[ "$(cat "$NET_TMPD"/query.*.out | grep -Ec '^(gone|error-reply) [1-9]')" = 3 ] &&
    net_log "ustackd stopped in $((SECONDS - t0)) s with 3 telemetry clients querying ($q)" ||
    net_softfail "telemetry clients during the stop: $q"
U_CORES=0
[ ! -e "/var/run/dpdk/ustack-$NAME" ] || net_softfail "/var/run/dpdk/ustack-$NAME left behind"

# ---- 2. socat under LD_PRELOAD (spawned, unnamed ustackd)
net_flush_neigh
# Not through net_u (a function: $! would be a subshell); ip netns exec and env exec, so
# $! is timeout's pid, and timeout passes SIGTERM on to socat.
ip netns exec "$NS_U" env USTACK_DEV="$(net_dev af_packet)" USTACK_IP="$IP_U/24" USTACK_CORES=0 \
    LD_PRELOAD="${NET_SAN_RT:+$NET_SAN_RT:}$LIB" timeout 90 socat TCP-LISTEN:8007,reuseaddr,fork,backlog=128 EXEC:cat \
    >"$NET_TMPD/socat.out" 2>&1 &
SOCAT_PID=$!
net_bg "$SOCAT_PID"
SPAWNED=""
find_spawned() {
    local p
    for p in $(ip netns pids "$NS_U"); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ustackd ] && SPAWNED=$p && return 0
    done
    return 1
}
wait_until 30 find_spawned || net_fail "no ustackd spawned by socat: $(head -c 300 "$NET_TMPD/socat.out")"
NET_USTACKD_PIDS="$NET_USTACKD_PIDS $SPAWNED"
SOCK2=/var/run/dpdk/ustack-$SPAWNED/dpdk_telemetry.v2
wait_until 20 test -S "$SOCK2" || net_fail "no telemetry socket $SOCK2"
hold_start 8007
check_conns "$SOCK2" 8007 1
st=$("$STAT" -n "$SPAWNED" --json /ustack/stats)
acc=$(stat_val "$st" shm_accepts)
[ "$acc" -ge "$N" ] && net_log "/ustack/stats under LD_PRELOAD: shm_accepts=$acc" ||
    net_softfail "/ustack/stats under LD_PRELOAD: shm_accepts=$acc, expected >= $N"
"$STAT" -n "ustack-$SPAWNED" -c -b >"$NET_TMPD/stat2.out" 2>&1 || true
shown=$(grep -Ec "^ESTAB +0 +0 +$IP_U:8007 +$IP_K:[0-9]+ +0\$" "$NET_TMPD/stat2.out" || true)
[ "$shown" = "$N" ] || net_softfail "ustack-stat -c under LD_PRELOAD printed $shown of $N connections"
hold_stop
net__kill_pid "$SOCAT_PID" 5
wait_until 15 eval '! proc_alive '"$SPAWNED" ||
    net_softfail "spawned ustackd $SPAWNED did not exit with socat: $(for p in $(ip netns pids "$NS_U"); do ps -o pid=,ppid=,stat=,args= -p "$p"; done | tr '\n' ';')"
net_finish
