#!/bin/bash
# Stock Debian nginx under LD_PRELOAD=libustack.so against the kernel peer. The library
# spawns ustackd (af_xdp on the ustack-side veth, which has no kernel address) when nginx's
# master opens its listening socket; the worker inherits the connection to it.
# nginx: master as root, one worker as nobody, sendfile on, listen 80, a private prefix in
# the test's temp directory (index.html, a 1 MiB and a 100 MiB random file). From the kernel
# namespace:
#   ab       - `ab -n 50000 -c 1000` and `ab -k -n 50000 -c 1000` (ulimit -n 20000 for ab and
#              nginx, worker_connections 16384, worker_rlimit_nofile 20000): every request
#              complete, none failed, no non-2xx response. 1000 concurrent handshakes
#              overflow nginx's SYN queue (backlog 511), so SYN cookies are part of it;
#   curl     - the 1 MiB and the 100 MiB file, sha256 equal to the originals;
#   pipeline - 10 GET requests for index.html in one write on one connection: 10 complete
#              200 responses with index.html as body, in order, then the server's close.
# Then SIGQUIT to the master (SIGKILL after 10 s) and ustackd must exit by itself.
# Every command is bounded; teardown kills whatever still runs in the namespaces.
# A failed check is reported (with the tail of ustackd's log) and the other checks still run.
# Runs in about 45-70 s on an idle 2-vCPU VM, up to about 200 s when the machine is busy
# (each ab run is bounded by 120 s). Knobs: LIBUSTACK (default build/libustack.so), NGINX
# (default nginx from PATH), NET_NGINX_KIND (device, default af_xdp), NET_NGINX_REQS /
# NET_NGINX_CONC (ab -n / -c), NET_NGINX_AB_SECS (bound for one ab run).
# net-timeout: 360
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init nginx 16
net_require_tools curl ab sha256sum python3
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
NGINX=${NGINX:-$(command -v nginx || true)}
{ [ -n "$NGINX" ] && [ -x "$NGINX" ]; } || net_fail "nginx not found (tools/deps.sh installs nginx-light)"
KIND=${NET_NGINX_KIND:-af_xdp}
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=""
[ -x "$PY" ] || PY=$(command -v python3)

REQS=${NET_NGINX_REQS:-50000} CONC=${NET_NGINX_CONC:-1000}
AB_SECS=${NET_NGINX_AB_SECS:-120}   # bound for one ab run
BIG_SECS=40         # bound for the 100 MiB download

# ---------------------------------------------------------------- nginx prefix

ngx_prefix
{
    echo '<!DOCTYPE html>'
    echo '<html><head><title>ustack</title></head><body>'
    for i in $(seq 1 20); do echo "<p>nginx on ustack, line $i of the index page</p>"; done
    echo '</body></html>'
} >"$PREFIX/www/index.html"
make_random "$PREFIX/www/1mb.bin" $((1024 * 1024))
make_random "$PREFIX/www/100mb.bin" $((100 * 1024 * 1024))
SHA_INDEX=$(sha "$PREFIX/www/index.html")
SHA_1MB=$(sha "$PREFIX/www/1mb.bin")
SHA_100MB=$(sha "$PREFIX/www/100mb.bin")

ngx_conf 16384 20000 "$NGX_STATIC" '        listen 80;
        server_name ustack;'
chmod -R a+rX "$NET_TMPD"
out=$(timeout 10 "$NGINX" -t "${NGX_ARGS[@]}" 2>&1) || net_fail "nginx -t refused the configuration: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"

# ---------------------------------------------------------------- helpers


# The processes of the ustack namespace with a given comm.
u_comm_pids() {
    local p
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && echo "$p"
    done
    return 0
}

# Remember the namespace's ustackd (SIGUSR1 stats on failure, DPDK runtime dir at teardown).
note_stackd() {
    local p
    p=$(u_comm_pids ustackd | head -n 1)
    [ -n "$p" ] || return 0
    USTACKD_PID=$p
    case " $NET_USTACKD_PIDS " in *" $p "*) ;; *) NET_USTACKD_PIDS="$NET_USTACKD_PIDS $p" ;; esac
}

ngx_errtail() {
    { grep -h '\[emerg\]\|\[alert\]\|\[crit\]\|^ustack:' "$PREFIX/error.log" "$NET_TMPD/nginx.err"; tail -n 1 "$NET_TMPD/nginx.err"; } \
        2>/dev/null | uniq | tail -n 3 | tr '\n' ' ' | head -c 400
}

# ---------------------------------------------------------------- start nginx

USTACKD_OUT="$NET_TMPD/stackd.log"
USTACKD_ERR=""
U_ENV=("LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24"
    "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT")
[ -n "${NET_USTACK_EAL:-}" ] && U_ENV+=("USTACK_EAL=$NET_USTACK_EAL")
[ -n "${NET_USTACK_LOG:-}" ] && U_ENV+=("USTACK_LOG=$NET_USTACK_LOG")
net_log "start nginx: ${U_ENV[*]} $NGINX ${NGX_ARGS[*]}"
# `ip netns exec` gives a private /sys: a bpffs there for libxdp (the spawned ustackd
# inherits it). sh and env exec, so $! is the nginx master itself (daemon off).
# shellcheck disable=SC2016
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"' sh "${NET_BPFFS:-1}" \
    "${U_ENV[@]}" "$NGINX" "${NGX_ARGS[@]}" >"$NET_TMPD/nginx.out" 2>"$NET_TMPD/nginx.err" </dev/null &
NGX_MASTER=$!
net_bg "$NGX_MASTER"
t0=$(ms_now)
ready=0 code=""
while [ $(($(ms_now) - t0)) -lt 30000 ]; do
    proc_alive "$NGX_MASTER" || break
    code=$(net_k timeout 5 curl -s -o "$NET_TMPD/index.got" -w '%{http_code}' --max-time 2 "http://$IP_U/" 2>/dev/null) || true
    if [ "$code" = 200 ]; then ready=1; break; fi
    sleep 0.2
done
note_stackd
if [ "$ready" != 1 ]; then
    proc_alive "$NGX_MASTER" || net_fail "nginx under ustack exited before answering: $(ngx_errtail)"
    net_fail "nginx under ustack did not answer http://$IP_U/ within 30 s (last HTTP code '$code'): $(ngx_errtail)"
fi
[ "$(sha "$NET_TMPD/index.got")" = "$SHA_INDEX" ] || net_softfail "GET / returned a body different from index.html"
workers=$(u_comm_pids nginx | grep -vx "$NGX_MASTER" | paste -sd " " || true)
wuser=""
for p in $workers; do wuser="$wuser $(stat -c %U "/proc/$p" 2>/dev/null)"; done
net_log "nginx ready after $(($(ms_now) - t0)) ms (master $NGX_MASTER as $(stat -c %U "/proc/$NGX_MASTER"), worker(s) ${workers:-none} as${wuser:- ?}, ustackd ${USTACKD_PID:-?})"
[ "$(echo "$workers" | wc -w)" = 1 ] || net_softfail "expected one nginx worker, found: '${workers}'"
case " $wuser " in *" nobody "*) ;; *) net_softfail "the nginx worker does not run as nobody (user:$wuser)" ;; esac

# Everything up? (nginx master and ustackd; a failed check after their death says so.)
alive_msg() {
    local m=""
    proc_alive "$NGX_MASTER" || m="nginx master exited"
    [ -n "$USTACKD_PID" ] && ! proc_alive "$USTACKD_PID" && m="${m:+$m, }ustackd exited"
    printf '%s' "${m:+ ($m)}"
}

# ---------------------------------------------------------------- 1: ab

run_ab() {
    local out="$NET_TMPD/ab.$1.out" err="$NET_TMPD/ab.$1.err" rc=0 t0 complete failed non2xx rps
    shift
    t0=$(ms_now)
    # shellcheck disable=SC2016
    net_k sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        timeout -k 5 "$AB_SECS" ab "$@" "http://$IP_U/" >"$out" 2>"$err" </dev/null || rc=$?
    complete=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$out")
    failed=$(sed -n 's/^Failed requests: *\([0-9]*\).*/\1/p' "$out")
    non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\).*/\1/p' "$out")
    rps=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$out")
    if [ "$rc" != 0 ] || [ "$complete" != "$REQS" ] || [ "$failed" != 0 ] || [ -n "$non2xx" ]; then
        net_softfail "ab $* (exit $rc in $(($(ms_now) - t0)) ms): complete '${complete}', failed '${failed}', non-2xx '${non2xx:-0}'$(alive_msg): $(grep -v '^Completed\|^Finished\|^$' "$err" | tail -n 2 | tr '\n' ' ' | head -c 300)"
        grep -A 1 '^Failed requests' "$out" | sed 's/^/    /' >&2 || true
    else
        net_log "ab $*: $rps req/s, $complete complete, 0 failed, 0 non-2xx in $(($(ms_now) - t0)) ms"
    fi
}

run_ab close -n "$REQS" -c "$CONC"
run_ab keepalive -k -n "$REQS" -c "$CONC"

# ---------------------------------------------------------------- 2: curl

curl_check() {
    local file=$1 want=$2 secs=$3 got="$NET_TMPD/got.$1" rc=0 t0 ms size
    t0=$(ms_now)
    net_k timeout -k 2 "$secs" curl -s -S --max-time $((secs - 2)) -o "$got" "http://$IP_U/$file" \
        2>"$NET_TMPD/curl.$file.err" || rc=$?
    ms=$(($(ms_now) - t0))
    size=$(fsize "$got" 2>/dev/null || echo 0)
    if [ "$rc" != 0 ]; then
        net_softfail "curl $file exited $rc after $ms ms ($size bytes)$(alive_msg): $(head -c 200 "$NET_TMPD/curl.$file.err" | tr '\n' ' ')"
    elif [ "$(sha "$got")" != "$want" ]; then
        net_softfail "curl $file: sha256 differs ($size bytes of $(fsize "$PREFIX/www/$file"))"
    else
        net_log "curl $file: $size bytes, sha256 equal, in $ms ms ($(awk -v b="$size" -v t="$ms" 'BEGIN { printf "%.0f", b * 8 / (t > 0 ? t : 1) / 1000 }') Mbit/s)"
    fi
    rm -f "$got"
}

curl_check 1mb.bin "$SHA_1MB" 20
curl_check 100mb.bin "$SHA_100MB" "$BIG_SECS"

# ---------------------------------------------------------------- 3: pipelining

N_PIPE=10
rc=0
# shellcheck disable=SC2016
net_k timeout -k 2 15 "$PY" -c '
import socket, sys
host, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = open(path, "rb").read()
req = b""
for i in range(n):
    req += b"GET /index.html HTTP/1.1\r\nHost: ustack\r\nUser-Agent: pipeline-%d\r\n" % i
    req += b"Connection: close\r\n\r\n" if i == n - 1 else b"\r\n"
s = socket.create_connection((host, 80), timeout=10)
s.sendall(req)               # one write: all requests in one send
data = b""
while True:
    try:
        c = s.recv(65536)
    except socket.timeout:
        print("timeout after %d bytes" % len(data)); sys.exit(3)
    if not c:
        break
    data += c
ok = 0
rest = data
while rest:
    head, sep, rest = rest.partition(b"\r\n\r\n")
    if not sep:
        print("truncated headers after %d complete responses" % ok); sys.exit(1)
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200"):
        print("response %d: status %r" % (ok + 1, lines[0])); sys.exit(1)
    cl = [l for l in lines if l.lower().startswith(b"content-length:")]
    if not cl:
        print("response %d: no Content-Length" % (ok + 1)); sys.exit(1)
    ln = int(cl[0].split(b":")[1])
    if len(rest) < ln:
        print("response %d: body truncated (%d of %d bytes)" % (ok + 1, len(rest), ln)); sys.exit(1)
    if rest[:ln] != body:
        print("response %d: body differs from index.html" % (ok + 1)); sys.exit(1)
    rest = rest[ln:]
    ok += 1
if ok != n:
    print("%d complete responses, expected %d" % (ok, n)); sys.exit(1)
print("%d responses, %d bytes" % (ok, len(data)))
' "$IP_U" "$N_PIPE" "$PREFIX/www/index.html" >"$NET_TMPD/pipe.out" 2>&1 || rc=$?
if [ "$rc" = 0 ]; then
    net_log "pipelining: $N_PIPE GETs in one write: $(tail -n 1 "$NET_TMPD/pipe.out"), all complete"
else
    net_softfail "pipelining: $N_PIPE GETs in one write (exit $rc)$(alive_msg): $(tail -n 2 "$NET_TMPD/pipe.out" | tr '\n' ' ' | head -c 300)"
fi

# ---------------------------------------------------------------- stop

proc_alive "$NGX_MASTER" || net_softfail "the nginx master exited during the test: $(ngx_errtail)"
note_stackd
if [ -n "$USTACKD_PID" ] && [ "${NET_VERBOSE:-0}" = 1 ]; then
    st=""
    ustackd_stats st
    net_log "ustackd stats: $(tr '\n' ' ' <"$st")"
fi
# shellcheck disable=SC2317
ngx_gone() { ! proc_alive "$NGX_MASTER"; }
# shellcheck disable=SC2317
stackd_gone() { ! proc_alive "$USTACKD_PID"; }
if proc_alive "$NGX_MASTER"; then
    kill -QUIT "$NGX_MASTER" 2>/dev/null || true
    wait_until 10 ngx_gone || {
        net_softfail "nginx master did not exit within 10 s of SIGQUIT: killed"
        kill -KILL "$NGX_MASTER" 2>/dev/null || true
    }
fi
wait "$NGX_MASTER" 2>/dev/null || true
for p in $(u_comm_pids nginx); do kill -KILL "$p" 2>/dev/null || true; done
if [ -n "$USTACKD_PID" ]; then
    t0=$(ms_now)
    if wait_until 10 stackd_gone; then
        net_log "ustackd gone $(($(ms_now) - t0)) ms after nginx exited"
        USTACKD_PID=""
    else
        net_softfail "ustackd (pid $USTACKD_PID) still runs 10 s after nginx exited"
    fi
fi
[ "$KIND" = af_xdp ] && { net_u ip link set "$VETH_U" xdp off 2>/dev/null || true; }
if grep -q '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" 2>/dev/null; then
    net_log "nginx error.log has alerts: $(grep '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" | tail -n 3 | tr '\n' ' ' | head -c 400)"
fi
net_finish
