#!/bin/bash
# net-timeout: 150
# Forking servers and spawning programs under LD_PRELOAD=libustack.so share one ustackd
# (issue 8; docs/shm.md "Start-up, inheritance, exit"), af_packet:
#   prefork - a Python pre-fork server (tests/net/helpers/prefork_server.py): the parent
#             listens, forks 4 children that each block in accept() on the inherited
#             listener. The kernel side makes N connections (20 at a time), each answered by
#             a child with its pid: all N answered, every answer from one of the children,
#             at least 2 children served (the kernel's wake-one spreads blocking accepts as
#             well), one ustackd; then the server stops and its ustackd exits.
#   spawn   - a preloaded Python program attaches (it listens) and runs shell scripts
#             whose children exec curl: two downloads one after the other and three at
#             once (subprocess's default: fork, close the fds above 2, exec), then two at
#             once started through posix_spawn (close_fds=False, Python's own copy of the
#             environment) from a kernel-side server, all byte-exact (sha256), every curl on the
#             ustackd the parent spawned (never a second one), and that ustackd exits with
#             the parent.
#   slow     - `socat TCP-LISTEN,fork EXEC:cat` under ustack; a kernel-side client connects
#             while socat is stopped (SIGSTOP), then ustackd is stopped for 2.5 s and socat
#             goes on: it accepts, forks and closes its copy of the accepted socket before
#             ustackd could fetch the
#             socket's eventfd (SHM_OP_ATTACH, by fd number); after SIGCONT the client's
#             200,000 bytes must come back equal within 10 s and ustackd count no failed
#             eventfd fetch (shm_efd_fail). close() used to give up waiting after 1 s, and
#             the child then slept for ever (seen as a rare stall under load).
#   early    - a Python server under ustack starts a worker (a separate program) before
#             it makes any socket, then passes an accepted connection to it (SCM_RIGHTS):
#             with USTACK_ATTACH_EARLY=1 or unset the worker echoes it; with =0 it cannot.
#   stalled  - a preloaded Python client, with its ustackd stopped: socket(), its close(),
#             and a second socket's non-blocking connect() return within 1 s (EINPROGRESS);
#             after SIGCONT that connection echoes through a kernel socat, with one
#             cancelled eventfd fetch and no failed SOCKET or CONNECT counted.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init fork 19
net_require_tools python3 curl sha256sum socat nc
net_require_ustackd
PY=$(command -v python3)
H="$NET_ROOT/tests/net/helpers"
[ -r "${LIBUSTACK:=$NET_ROOT/build/libustack.so}" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
KIND=${NET_KINDS:-af_packet}
KIND=${KIND%% *}
N=${NET_FORK_CONNS:-400}
D="$NET_TMPD/sync"
mkdir -p "$D"
chmod 777 "$D"
P_PRE=7100 P_SPAWN=7101 P_HTTP=8080

# shellcheck disable=SC2317 # called through wait_until
only_stackd() { [ "$(u_stackds | tr '\n' ' ')" = "$1 " ]; }
# shellcheck disable=SC2317
no_stackd() { [ -z "$(u_stackds)" ]; }
# shellcheck disable=SC2317
have() { [ -e "$D/$1" ]; }

# ---------------------------------------------------------------- prefork
u_env "$KIND" prefork
u_bg "${U_ENV[@]}" "$PY" "$H/prefork_server.py" prefork "$P_PRE" 4 "$D" \
    >"$NET_TMPD/prefork.out" 2>"$NET_TMPD/prefork.err" </dev/null
SRV=$U_BG
wait_until 30 have prefork.pids || net_fail "prefork: the server did not start its children: $(tail -c 300 "$NET_TMPD/prefork.err")"
KIDS=$(cat "$D/prefork.pids")
USTACKD_PID=$(u_stackds | head -n 1)
NET_USTACKD_PIDS="$USTACKD_PID"
[ -n "$USTACKD_PID" ] || net_fail "prefork: no ustackd in the ustack namespace"
net_log "prefork: children $KIDS, ustackd $USTACKD_PID"

cat >"$NET_TMPD/client.py" <<'PYEOF'
import socket, sys, threading, time
host, port, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
answers, errors, lock = {}, [], threading.Lock()
nxt = [0]
deadline = time.time() + 60
def worker():
    while time.time() < deadline:
        with lock:
            i = nxt[0]
            if i >= n:
                return
            nxt[0] += 1
        try:
            # The first connections may find the listener not yet there: retried.
            for attempt in range(50):
                try:
                    c = socket.create_connection((host, port), timeout=10)
                    break
                except ConnectionRefusedError:
                    time.sleep(0.1)
            else:
                raise OSError("refused 50 times")
            c.sendall(b"req %d\n" % i)
            buf = b""
            while not buf.endswith(b"\n"):
                d = c.recv(256)
                if not d:
                    break
                buf += d
            c.close()
            pid, _, rest = buf.decode().partition(" ")
            if rest != "req %d\n" % i:
                raise OSError("bad answer %r" % buf)
            with lock:
                answers[pid] = answers.get(pid, 0) + 1
        except OSError as e:
            with lock:
                errors.append("%d: %s" % (i, e))
ts = [threading.Thread(target=worker) for _ in range(conc)]
for t in ts: t.start()
for t in ts: t.join()
print("answered", sum(answers.values()))
print("pids", " ".join("%s=%d" % kv for kv in sorted(answers.items())))
print("errors", len(errors), "; ".join(errors[:3]))
PYEOF
net_k timeout 90 "$PY" "$NET_TMPD/client.py" "$IP_U" "$P_PRE" "$N" 20 >"$NET_TMPD/client.out" 2>&1 || true
answered=$(sed -n 's/^answered //p' "$NET_TMPD/client.out")
pids=$(sed -n 's/^pids //p' "$NET_TMPD/client.out")
errs=$(sed -n 's/^errors //p' "$NET_TMPD/client.out")
net_log "prefork: $answered of $N answered; per child: $pids; errors: ${errs:-?}"
[ "$answered" = "$N" ] || net_softfail "prefork: $answered of $N connections answered (errors: $errs; $(tail -n 2 "$NET_TMPD/client.out" | tr '\n' ' '))"
served=0
for kv in $pids; do
    case " $KIDS " in *" ${kv%%=*} "*) served=$((served + 1)) ;; *) net_softfail "prefork: an answer from pid ${kv%%=*}, not one of the children ($KIDS)" ;; esac
done
[ "$served" -ge 2 ] || net_softfail "prefork: only $served of 4 children served ($pids)"
only_stackd "$USTACKD_PID" || net_softfail "prefork: ustackd processes now '$(u_stackds | tr '\n' ' ')', expected only $USTACKD_PID"
touch "$D/prefork.stop"
wait_until 15 no_stackd || net_softfail "prefork: ustackd still runs 15 s after the server stopped"
wait "$SRV" 2>/dev/null || true

# ---------------------------------------------------------------- spawn
mkdir -p "$NET_TMPD/www"
make_random "$NET_TMPD/www/f.bin" 3000000
want=$(sha "$NET_TMPD/www/f.bin")
(cd "$NET_TMPD/www" && exec ip netns exec "$NS_K" "$PY" -m http.server "$P_HTTP" --bind "$IP_K") \
    >"$NET_TMPD/http.out" 2>&1 &
net_bg $!
# shellcheck disable=SC2317
k_http() { net_k ss -ltnH "( sport = :$P_HTTP )" | grep -q .; }
wait_until 20 k_http || net_fail "spawn: the kernel-side http.server did not listen"
URL="http://$IP_K:$P_HTTP/f.bin"
O="$NET_TMPD/got"
mkdir -p "$O"
C="curl -sS --max-time 60 -o $O"
SCRIPT1="$C/s1 $URL && $C/s2 $URL || exit 11
$C/p1 $URL & a=\$!
$C/p2 $URL & b=\$!
$C/p3 $URL & c=\$!
wait \$a && wait \$b && wait \$c || exit 12"
SCRIPT2="$C/q1 $URL & a=\$!
$C/q2 $URL & b=\$!
wait \$a && wait \$b || exit 13"
u_env "$KIND" spawn
u_bg "${U_ENV[@]}" "$PY" "$H/prefork_server.py" spawn "$P_SPAWN" "$D" "$SCRIPT1" "$SCRIPT2" \
    >"$NET_TMPD/spawn.out" 2>"$NET_TMPD/spawn.err" </dev/null
APP=$U_BG
wait_until 30 have spawn.attached || net_fail "spawn: the parent did not attach: $(tail -c 300 "$NET_TMPD/spawn.err")"
USTACKD_PID=$(u_stackds | head -n 1)
NET_USTACKD_PIDS="$USTACKD_PID"
seen="$USTACKD_PID"
# While the script runs, every ustackd seen in the namespace is the parent's.
t0=$SECONDS
while proc_alive "$APP" && [ $((SECONDS - t0)) -lt 100 ]; do
    for p in $(u_stackds); do
        case " $seen " in *" $p "*) ;; *) seen="$seen $p" ;; esac
    done
    sleep 0.1
done
rc=0
if proc_alive "$APP"; then
    net__kill_pid "$APP" 3
    net_softfail "spawn: the script did not finish within 100 s"
else
    wait "$APP" || rc=$?
fi
[ "$rc" = 0 ] || net_softfail "spawn: the script exited $rc: $(tail -c 300 "$NET_TMPD/spawn.err" | tr '\n' ' ')"
for f in s1 s2 p1 p2 p3 q1 q2; do
    if [ ! -e "$O/$f" ]; then
        net_softfail "spawn: download $f missing"
    elif [ "$(sha "$O/$f")" != "$want" ]; then
        net_softfail "spawn: download $f differs ($(fsize "$O/$f") bytes)"
    fi
done
[ "$seen" = "$USTACKD_PID" ] || net_softfail "spawn: more than one ustackd seen during the script: $seen"
net_log "spawn: 7 curls (2 in a row, 3 at once, then 2 at once through posix_spawn) byte-exact through ustackd $USTACKD_PID alone"
wait_until 15 no_stackd || net_softfail "spawn: ustackd still runs 15 s after the parent exited"

# ---------------------------------------------------------------- slow
P_SLOW=7102
u_env "$KIND" slow
u_bg "${U_ENV[@]}" socat -t 10 "TCP-LISTEN:$P_SLOW,fork,reuseaddr" EXEC:cat \
    </dev/null >/dev/null 2>"$NET_TMPD/slow.err"
SP=$U_BG
wait_listen "$SP" "$P_SLOW" || net_fail "slow: socat under ustack does not listen: $(tail -c 300 "$NET_TMPD/slow.err")"
u_note_stackd
got=$(net_k timeout 30 "$PY" - "$IP_U" "$P_SLOW" "$USTACKD_PID" "$SP" <<'EOF_PY' 2>&1
import os, signal, socket, sys, time
ip, port, sd, sp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# socat stopped while ustackd queues the connection; then ustackd stopped while socat
# accepts it, forks and closes its copy; then ustackd goes on.
os.kill(sp, signal.SIGSTOP)
try:
    s = socket.create_connection((ip, port), timeout=10)
    time.sleep(0.3)
    os.kill(sd, signal.SIGSTOP)
finally:
    os.kill(sp, signal.SIGCONT)
try:
    time.sleep(2.5)
finally:
    os.kill(sd, signal.SIGCONT)
data = os.urandom(200000)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = b""
end = time.time() + 10
try:
    while time.time() < end:
        b = s.recv(65536)
        if not b:
            break
        got += b
except OSError as e:
    print("recv: %s" % e)
print("echoed %d %s" % (len(got), "equal" if got == data else "different"))
EOF_PY
) || true
fails=$("$NET_ROOT/tools/ustack-stat" -n "$USTACKD_PID" --json /ustack/stats 2>/dev/null |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["shm_efd_fail"])' 2>/dev/null) || fails="?"
if [ "$got" = "echoed 200000 equal" ] && [ "$fails" = 0 ]; then
    net_log "slow: socat closed its copy while ustackd was stopped; the child echoed 200,000 bytes after SIGCONT (shm_efd_fail 0)"
else
    net_softfail "slow: after a 2.5 s stop of ustackd: '$(printf '%s' "$got" | tail -n 2 | tr '\n' ' ')', shm_efd_fail '$fails'"
fi
stop_bg "$SP"

# ---------------------------------------------------------------- stalled (client side)
# A preloaded client makes sockets while its ustackd is stopped: socket(), close() of it,
# and a non-blocking connect() of a second one all return at once (SOCKET and CONNECT go
# without a reply; the close takes the queued eventfd fetch back); after SIGCONT the second
# socket connects and echoes, and ustackd counts the cancelled fetch and no failure.
P_ECHO=7103
wait_until 10 u_no_stackd || true # the slow part's ustackd, so that ours is the one noted
net_k timeout -k 2 60 socat -t 5 "TCP-LISTEN:$P_ECHO,fork,reuseaddr" EXEC:cat </dev/null >/dev/null 2>&1 &
net_bg $!
wait_until 10 net_k nc -z -w 1 "$IP_K" "$P_ECHO" || net_fail "stalled: the kernel echo server did not start"
cat >"$D/stalled.py" <<'EOF_PY'
import os, select, socket, sys, time
ip, port, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def note(name, text):
    with open(os.path.join(d, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(d, name + ".tmp"), os.path.join(d, name))
w = socket.create_connection((ip, port), timeout=10)  # attached, ustackd serving
w.close()
note("ready", "1")
end = time.time() + 20
while not os.path.exists(os.path.join(d, "go")) and time.time() < end:
    time.sleep(0.01)
t0 = time.monotonic()
a = socket.socket()
a.close()
b = socket.socket()
b.setblocking(False)
rc = b.connect_ex((ip, port))
note("fast", "%d %d" % (int((time.monotonic() - t0) * 1000), rc))
_, wr, _ = select.select([], [b], [], 20)
err = b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
b.setblocking(True)
b.settimeout(10)
ok = False
if wr and err == 0:
    b.sendall(b"stalled")
    got = b""
    while len(got) < 7:
        x = b.recv(64)
        if not x:
            break
        got += x
    ok = got == b"stalled"
note("result", "%s err %d" % ("echoed" if ok else "failed", err))
end = time.time() + 20  # ustackd stays while the test reads its counters
while not os.path.exists(os.path.join(d, "done")) and time.time() < end:
    time.sleep(0.01)
EOF_PY
u_env "$KIND" stalled
u_bg "${U_ENV[@]}" timeout -k 2 60 "$PY" "$D/stalled.py" "$IP_K" "$P_ECHO" "$D" </dev/null >/dev/null 2>"$NET_TMPD/stalled.err"
STP=$U_BG
wait_until 30 test -e "$D/ready" || net_fail "stalled: the client did not start: $(tail -c 300 "$NET_TMPD/stalled.err")"
u_note_stackd
kill -STOP "$USTACKD_PID"
touch "$D/go"
wait_until 5 test -e "$D/fast" || true
sleep 1.5
kill -CONT "$USTACKD_PID"
wait_until 30 test -e "$D/result" || true
fast=$(cat "$D/fast" 2>/dev/null) result=$(cat "$D/result" 2>/dev/null)
stats=$("$NET_ROOT/tools/ustack-stat" -n "$USTACKD_PID" --json /ustack/stats 2>/dev/null |
    "$PY" -c 'import json,sys; s=json.load(sys.stdin); print(s["shm_attach_cancelled"], s["shm_socket_fail"], s["shm_connect_fail"])' 2>/dev/null) || stats="?"
touch "$D/done"
read -r ms rc <<<"${fast:-x x}"
read -r canc sfail cfail <<<"${stats:-? ? ?}"
if [ -n "$fast" ] && [ "$ms" -lt 1000 ] && [ "$rc" = 115 ] && [ "$result" = "echoed err 0" ] &&
    [ "$canc" -ge 1 ] 2>/dev/null && [ "$sfail" = 0 ] && [ "$cfail" = 0 ]; then
    net_log "stalled: socket(), close() and a non-blocking connect() took $ms ms with ustackd stopped (EINPROGRESS); after SIGCONT the connection echoed (shm_attach_cancelled $canc, shm_socket_fail 0, shm_connect_fail 0)"
else
    net_softfail "stalled: fast='$fast' (ms, connect_ex) result='$result' counters (cancelled, socket_fail, connect_fail)='$stats': $(tail -c 300 "$NET_TMPD/stalled.err")"
fi
stop_bg "$STP"

# ---------------------------------------------------------------- early (passing to workers)
# A server that starts its worker before it makes any socket, then passes each accepted
# connection to it over a Unix socket (node's cluster does this). Under
# USTACK_ATTACH_EARLY=1 the server attaches at start; by default (the variable unset) it
# attaches when it starts the worker while holding the Unix socket: either way the worker
# inherits its region and takes the connection (echoes it). With USTACK_ATTACH_EARLY=0 the
# worker attaches on its own and gets a bare eventfd (ENOTSOCK), the documented limit.
P_EARLY=7104
wait_until 10 u_no_stackd || true
cat >"$D/early.py" <<'EOF_PY'
import os, socket, subprocess, sys
port, d, role = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if role == "worker":
    u = socket.socket(fileno=int(sys.argv[4]))
    msg, fds, _, _ = socket.recv_fds(u, 16, 1)
    try:
        c = socket.socket(fileno=fds[0])
        c.sendall(c.recv(64).upper())
        c.close()
        res = "echoed"
    except OSError as e:
        res = "worker: %s" % e
    with open(os.path.join(d, "early.res"), "w") as f:
        f.write(res)
    sys.exit(0)
a, b = socket.socketpair()
w = subprocess.Popen([sys.executable, sys.argv[0], str(port), d, "worker", str(b.fileno())],
                     pass_fds=[b.fileno()])
b.close()
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", port))
l.listen(8)
open(os.path.join(d, "early.ready"), "w").close()
l.settimeout(20)
c, _ = l.accept()
socket.send_fds(a, [b"h"], [c.fileno()])
c.close()
w.wait(timeout=20)
EOF_PY
for mode in 1 unset 0; do
    rm -f "$D/early.ready" "$D/early.res"
    u_env "$KIND" "early$mode"
    early=("USTACK_ATTACH_EARLY=$mode")
    [ "$mode" = unset ] && early=()
    u_bg "${U_ENV[@]}" "${early[@]}" timeout -k 2 40 "$PY" "$D/early.py" "$P_EARLY" "$D" server \
        </dev/null >/dev/null 2>"$NET_TMPD/early$mode.err"
    EP=$U_BG
    wait_until 30 test -e "$D/early.ready" || net_fail "early: the server did not start: $(tail -c 300 "$NET_TMPD/early$mode.err")"
    got=$(echo hello | net_k timeout 10 socat -t 5 - "TCP:$IP_U:$P_EARLY,connect-timeout=5" 2>/dev/null) || true
    wait_until 20 test -e "$D/early.res" || true
    res=$(cat "$D/early.res" 2>/dev/null)
    if [ "$mode" != 0 ]; then
        if [ "$got" = HELLO ] && [ "$res" = echoed ]; then
            net_log "early: USTACK_ATTACH_EARLY $mode: the worker started before any socket took the passed connection and echoed it"
        else
            net_softfail "early: USTACK_ATTACH_EARLY $mode: got '$got', worker '$res': $(tail -c 300 "$NET_TMPD/early$mode.err")"
        fi
    elif [ "$got" != HELLO ] && [ -n "$res" ] && [ "$res" != echoed ]; then
        net_log "early: with USTACK_ATTACH_EARLY=0 the worker cannot take the connection, as documented ($res)"
    else
        net_softfail "early: USTACK_ATTACH_EARLY=0: got '$got', worker '$res' (the documented limit changed?)"
    fi
    stop_bg "$EP"
    wait_until 10 u_no_stackd || true
done
net_finish
