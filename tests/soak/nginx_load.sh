#!/bin/bash
# Load soak: stock nginx under LD_PRELOAD=libustack.so (one worker, af_xdp) serving
# `ab -n 200000 -c 10000` (one connection per request) from the kernel namespace, then the
# same with keep-alive (-k). Passes only with every request complete, zero failed, zero
# non-2xx, nginx and ustackd alive, and ustackd gone after nginx stops.
# ab and nginx run with ulimit -n 20000 (the machine's limit); 10000 concurrent clients
# from one kernel address need more than the default ephemeral range over 200000
# connections (the ustack side holds TIME-WAIT), so the client's range is 1024-65535.
# Knobs: SOAK_REQS / SOAK_CONC (ab -n / -c), SOAK_AB_SECS (bound for one ab run, 600),
# SOAK_AB_TIMEOUT (ab -s, 60), LIBUSTACK, NGINX, SOAK_KIND (device, af_xdp).
# Runs in ~20 s (2026-11-28; once 1-3 minutes) on an idle 2-vCPU VM. Part of `make soak` (tests/soak/run.sh).
# shellcheck source-path=SCRIPTDIR source=../net/lib.sh
. "$(dirname "$0")/../net/lib.sh"
net_init soak_load 40
net_require_tools ab curl
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built"
NGINX=${NGINX:-$(command -v nginx || true)}
[ -x "$NGINX" ] || net_fail "nginx not found (tools/deps.sh installs nginx-light)"
KIND=${SOAK_KIND:-af_xdp}
REQS=${SOAK_REQS:-200000} CONC=${SOAK_CONC:-10000}
AB_SECS=${SOAK_AB_SECS:-600} AB_TIMEOUT=${SOAK_AB_TIMEOUT:-60}

ngx_prefix
echo '<html><body>ustack soak</body></html>' >"$PREFIX/www/index.html"
ngx_conf 19000 20000 '    default_type text/html;
    access_log off;
    keepalive_requests 1000000;' '        listen 80 backlog=4096;'
chmod -R a+rX "$NET_TMPD"
net_k sysctl -qw net.ipv4.ip_local_port_range="1024 65535" >/dev/null

ms_now() { echo $(($(date +%s%N) / 1000000)); }
u_comm_pids() {
    local p
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && echo "$p"
    done
    return 0
}

USTACKD_OUT="$NET_TMPD/stackd.log"
U_ENV=("LD_PRELOAD=$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24"
    "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT")
[ -n "${NET_USTACK_EAL:-}" ] && U_ENV+=("USTACK_EAL=$NET_USTACK_EAL")
# shellcheck disable=SC2016
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"' sh "${NET_BPFFS:-1}" \
    "${U_ENV[@]}" "$NGINX" "${NGX_ARGS[@]}" >"$NET_TMPD/nginx.out" 2>"$NET_TMPD/nginx.err" </dev/null &
NGX_MASTER=$!
net_bg "$NGX_MASTER"
t0=$(ms_now) ready=0
while [ $(($(ms_now) - t0)) -lt 30000 ]; do
    proc_alive "$NGX_MASTER" || break
    code=$(net_k timeout 5 curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$IP_U/" 2>/dev/null) || true
    if [ "$code" = 200 ]; then ready=1; break; fi
    sleep 0.2
done
# The kernel names a process after its binary, cut to 15 bytes (USTACKD may be a copy).
USTACKD_COMM=$(basename "$USTACKD" | cut -c1-15)
USTACKD_PID=$(u_comm_pids "$USTACKD_COMM" | head -n 1)
NET_USTACKD_PIDS="$USTACKD_PID"
[ "$ready" = 1 ] || net_fail "nginx under ustack did not answer within 30 s: $(tail -n 3 "$NET_TMPD/nginx.err" | tr '\n' ' ')"
net_log "nginx ready (master $NGX_MASTER, ustackd $USTACKD_PID)"

run_ab() {
    local tag=$1 out err rc=0 t0 complete failed non2xx rps
    shift
    out="$NET_TMPD/ab.$tag.out" err="$NET_TMPD/ab.$tag.err"
    t0=$(ms_now)
    # shellcheck disable=SC2016
    net_k sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        timeout -k 5 "$AB_SECS" ab -s "$AB_TIMEOUT" "$@" "http://$IP_U/" >"$out" 2>"$err" </dev/null || rc=$?
    complete=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$out")
    failed=$(sed -n 's/^Failed requests: *\([0-9]*\).*/\1/p' "$out")
    non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\).*/\1/p' "$out")
    rps=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$out")
    if [ "$rc" != 0 ] || [ "$complete" != "$REQS" ] || [ "$failed" != 0 ] || [ -n "$non2xx" ]; then
        net_softfail "ab $* (exit $rc in $(($(ms_now) - t0)) ms): complete '$complete', failed '$failed', non-2xx '${non2xx:-0}': $(grep -v '^Completed\|^Finished\|^$' "$err" | tail -n 2 | tr '\n' ' ' | head -c 300)"
    else
        net_log "ab $*: $rps req/s, $complete complete, 0 failed, 0 non-2xx in $(($(ms_now) - t0)) ms; $(grep -E '^ +(50|99|100)% ' "$out" | awk '{printf "p%s %s ms ", $1, $2}')"
    fi
}

run_ab close -n "$REQS" -c "$CONC"
run_ab keepalive -k -n "$REQS" -c "$CONC"

proc_alive "$NGX_MASTER" || net_softfail "nginx master exited during the soak"
proc_alive "$USTACKD_PID" || net_softfail "ustackd exited during the soak"
st=""
ustackd_stats st && net_log "ustackd: $(grep -o 'imissed=[0-9]*\|tcp_rto=[0-9]*\|tcp_syncookies_sent=[0-9]*\|tcp_passive_opens=[0-9]*' "$st" | tr '\n' ' ')"
kill -QUIT "$NGX_MASTER" 2>/dev/null || true
# shellcheck disable=SC2317
ngx_gone() { ! proc_alive "$NGX_MASTER"; }
# shellcheck disable=SC2317
stackd_gone() { ! proc_alive "$USTACKD_PID"; }
wait_until 10 ngx_gone || { net_softfail "nginx did not stop within 10 s of SIGQUIT"; kill -KILL "$NGX_MASTER" 2>/dev/null || true; }
for p in $(u_comm_pids nginx); do kill -KILL "$p" 2>/dev/null || true; done
if wait_until 10 stackd_gone; then USTACKD_PID=""; else net_softfail "ustackd still runs 10 s after nginx exited"; fi
[ "$KIND" = af_xdp ] && { net_u ip link set "$VETH_U" xdp off 2>/dev/null || true; }
net_finish
