#!/bin/bash
# Many processes of one program on one ustackd: stock nginx with several workers under
# LD_PRELOAD=libustack.so (master as root, workers as nobody, af_xdp), load from the kernel
# namespace with ab. Each run starts nginx (which spawns its own ustackd) with:
#   A  worker_processes 2, daemon off, accept_mutex off (nginx registers the listener with
#      EPOLLEXCLUSIVE, checked in the workers' epoll fdinfo);
#   B  worker_processes 4, daemon on, accept_mutex on;
#   C  worker_processes auto (one per CPU), daemon on, `listen 80 reuseport` (one listening
#      socket per worker, made by the master before forking);
# and checks: `ab -n N -c 1000` completes with 0 failed and 0 non-2xx, and every worker
# served requests (access log with $pid; the count per worker is logged).
# In A also: `ab -k`; `nginx -s reload` during an ab run (0 failed, the old workers exit,
# the new ones serve the next ab); a worker SIGKILLed during an ab run (ab may see resets on that
# worker's connections, but it completes), ustackd stays up and reaps it (shm_procs_reaped,
# shm_reclaim_closes grow), the master's replacement serves, the next ab has 0 failed.
# In C also: a reload during ab (0 failed, the new workers serve the next ab); then ustackd SIGKILLed while a worker sends a
# rate-limited 64 MiB file: the worker ends that request within 5 s (ustackd's pidfd wakes
# its epoll_wait, the send fails), nginx keeps running (no worker exits or spins), and
# `nginx -s stop` ends master and workers within 5 s.
# A and B end with `nginx -s quit`: master and workers exit within 10 s, and ustackd exits by
# itself after them.
# About 90 s on a 2-vCPU VM (110 s while other jobs run). Knobs: LIBUSTACK, NGINX,
# NET_WORKERS_REQS (ab -n of the plain runs, default 30000), NET_WORKERS_SIDE_REQS (ab -n of
# the keep-alive, reload and kill runs, default 20000), NET_WORKERS_MUTEX_DELAY (nginx's
# accept_mutex_delay, which matters in B; default 20ms, nginx's own is 500ms), NET_WORKERS_CONC (ab -c,
# default 1000), NET_WORKERS_AB_SECS (bound per ab run, default 60).
# net-timeout: 300
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init workers 17
net_require_tools curl ab python3
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
NGINX=${NGINX:-$(command -v nginx || true)}
{ [ -n "$NGINX" ] && [ -x "$NGINX" ]; } || net_fail "nginx not found (tools/deps.sh installs nginx-light)"
REQS=${NET_WORKERS_REQS:-30000} CONC=${NET_WORKERS_CONC:-1000}
SIDE=${NET_WORKERS_SIDE_REQS:-20000} # the runs with a reload or a kill, and keep-alive
AB_SECS=${NET_WORKERS_AB_SECS:-60}
# B (accept_mutex on): a worker without the mutex tries for it every accept_mutex_delay
# (500 ms) and gets it only while the holder is neither in epoll_wait() nor accepting, so a
# short run leaves some of the four workers without a request (nginx on kernel sockets too:
# two of four served in 0.5 s of ab -n 4000 -c 200). Under the sanitizers one worker of four
# served nothing in 3 runs of 8 s and one of 22 s (10,000 requests) -- likely because the
# holder then mostly waits in epoll_wait() for the slow ustackd, mutex held, not verified --
# so make net-san-test shortened the delay (NET_WORKERS_MUTEX_DELAY=20ms). The plain build
# then failed the same way once in CI (B-close, 30,000 requests in 2.5 s on the loaded VM:
# per worker 12711, 17287, 2 and none), so the delay is 20 ms for every build: the check is
# that every worker gets connections through ustack when nginx hands the mutex around, not
# how nginx's 500 ms default shares them in a short run.
MUTEX_DELAY="accept_mutex_delay ${NET_WORKERS_MUTEX_DELAY:-20ms};"
NCPU=$(nproc)

ngx_prefix
echo '<html><body>ustack workers</body></html>' >"$PREFIX/www/index.html"
make_random "$PREFIX/www/big.bin" $((64 * 1024 * 1024))
chmod -R a+rX "$NET_TMPD"

# write_conf WORKERS DAEMON(on|off) ACCEPT_MUTEX(on|off) LISTEN-EXTRA
write_conf() {
    cat >"$PREFIX/nginx.conf" <<EOF
user nobody $NGX_GROUP;
worker_processes $1;
worker_rlimit_nofile 20000;
daemon $2;
master_process on;
pid $PREFIX/nginx.pid;
error_log $PREFIX/error.log info;
events {
    worker_connections 16384;
    accept_mutex $3;
    $MUTEX_DELAY
}
http {
    default_type application/octet-stream;
    log_format w '\$pid \$status \$uri \$body_bytes_sent';
    access_log $PREFIX/access.log w;
    sendfile on;
    keepalive_requests 1000000;
$TEMP_PATHS
    server {
        listen 80$4;
        root $PREFIX/www;
    }
}
EOF
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }

u_comm_pids() {
    local p
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && echo "$p"
    done
    return 0
}

note_stackd() {
    local p
    p=$(u_comm_pids ustackd | head -n 1)
    [ -n "$p" ] || return 0
    USTACKD_PID=$p
    case " $NET_USTACKD_PIDS " in *" $p "*) ;; *) NET_USTACKD_PIDS="$NET_USTACKD_PIDS $p" ;; esac
}

ngx_errtail() {
    { grep -h '\[emerg\]\|\[alert\]\|\[crit\]\|^ustack:' "$PREFIX/error.log" "$NET_TMPD"/nginx.*.err; } \
        2>/dev/null | uniq | tail -n 3 | tr '\n' ' ' | head -c 400
}

# The nginx workers: children of the master.
workers() { pgrep -P "$MASTER" 2>/dev/null | sort -n | paste -sd ' ' || true; }

# start_nginx NAME: start nginx with the current nginx.conf, wait until it answers; sets
# MASTER, WORKERS, USTACKD_PID.
USTACKD_OUT=""
start_nginx() {
    local name=$1 t0 code="" ready=0 daemon
    USTACKD_OUT="$NET_TMPD/stackd.$name.log"
    out=$(timeout 10 "$NGINX" -t "${NGX_ARGS[@]}" 2>&1) || net_fail "nginx -t refused the configuration: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"
    rm -f "$PREFIX/nginx.pid"
    : >"$PREFIX/access.log"
    local -a env=("LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev af_xdp)" "USTACK_IP=$IP_U/24"
        "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT")
    [ -n "${NET_USTACK_EAL:-}" ] && env+=("USTACK_EAL=$NET_USTACK_EAL")
    [ -n "${NET_USTACK_LOG:-}" ] && env+=("USTACK_LOG=$NET_USTACK_LOG")
    daemon=$(sed -n 's/^daemon \(o[nf]*\);/\1/p' "$PREFIX/nginx.conf")
    net_log "[$name] start nginx ($(grep -E '^worker_processes|^daemon|accept_mutex|listen' "$PREFIX/nginx.conf" | tr -s ' \n' ' '))"
    # shellcheck disable=SC2016
    ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
        ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"' sh "${NET_BPFFS:-1}" \
        "${env[@]}" "$NGINX" "${NGX_ARGS[@]}" >"$NET_TMPD/nginx.$name.out" 2>"$NET_TMPD/nginx.$name.err" </dev/null &
    local launcher=$!
    net_bg "$launcher"
    t0=$(ms_now)
    while [ $(($(ms_now) - t0)) -lt 30000 ]; do
        code=$(net_k timeout 5 curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$IP_U/index.html" 2>/dev/null) || true
        if [ "$code" = 200 ]; then ready=1; break; fi
        [ "$daemon" = off ] && ! proc_alive "$launcher" && break
        sleep 0.2
    done
    if [ "$daemon" = off ]; then
        MASTER=$launcher
    else
        wait "$launcher" 2>/dev/null || true
        MASTER=$(cat "$PREFIX/nginx.pid" 2>/dev/null || true)
    fi
    [ "$ready" = 1 ] || net_fail "[$name] nginx did not answer within 30 s (last HTTP code '$code'): $(ngx_errtail)"
    { [ -n "$MASTER" ] && proc_alive "$MASTER"; } || net_fail "[$name] no nginx master (pid file: '$MASTER')"
    net_bg "$MASTER"
    note_stackd
    [ -n "$USTACKD_PID" ] || net_fail "[$name] no ustackd in the namespace"
    # Workers start one after the other; wait for the configured count.
    local want i
    want=$(sed -n 's/^worker_processes \(.*\);/\1/p' "$PREFIX/nginx.conf")
    [ "$want" = auto ] && want=$NCPU
    for ((i = 0; i < 50; i++)); do
        WORKERS=$(workers)
        [ "$(echo "$WORKERS" | wc -w)" = "$want" ] && break
        sleep 0.1
    done
    local users="" p
    for p in $WORKERS; do users="$users $(stat -c %U "/proc/$p" 2>/dev/null)"; done
    net_log "[$name] ready after $(($(ms_now) - t0)) ms: master $MASTER ($(stat -c %U "/proc/$MASTER")), workers $WORKERS (${users# }), ustackd $USTACKD_PID"
    [ "$(echo "$WORKERS" | wc -w)" = "$want" ] || net_softfail "[$name] expected $want workers, found '$WORKERS'"
    for p in $users; do [ "$p" = nobody ] || net_softfail "[$name] a worker runs as '$p', not nobody"; done
}

# ab_run NAME STRICT(1: 0 failed required) ab-args...: runs ab in the kernel namespace.
# Sets AB_COMPLETE, AB_FAILED.
ab_start() {
    local name=$1
    shift
    # shellcheck disable=SC2016
    net_k sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        timeout -k 5 "$AB_SECS" ab -r "$@" "http://$IP_U/index.html" \
        >"$NET_TMPD/ab.$name.out" 2>"$NET_TMPD/ab.$name.err" </dev/null &
    AB_PID=$!
    net_bg "$AB_PID"
    AB_T0=$(ms_now)
}

# ab_check NAME STRICT N: wait for the ab started last, check its results.
ab_check() {
    local name=$1 strict=$2 n=$3 rc=0 out="$NET_TMPD/ab.$1.out" non2xx rps
    wait "$AB_PID" || rc=$?
    AB_COMPLETE=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$out")
    AB_FAILED=$(sed -n 's/^Failed requests: *\([0-9]*\).*/\1/p' "$out")
    non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\).*/\1/p' "$out")
    rps=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$out")
    if [ "$rc" != 0 ] || [ "$AB_COMPLETE" != "$n" ] || [ -n "$non2xx" ] ||
        { [ "$strict" = 1 ] && [ "$AB_FAILED" != 0 ]; }; then
        net_softfail "[$name] ab (exit $rc in $(($(ms_now) - AB_T0)) ms): complete '$AB_COMPLETE' of $n, failed '$AB_FAILED', non-2xx '${non2xx:-0}': $(grep -v '^Completed\|^Finished\|^$' "$NET_TMPD/ab.$name.err" | tail -n 2 | tr '\n' ' ' | head -c 300)"
        grep -A 1 '^Failed requests' "$out" | sed 's/^/    /' >&2 || true
        return 1
    fi
    net_log "[$name] ab: $rps req/s, $AB_COMPLETE complete, $AB_FAILED failed, 0 non-2xx in $(($(ms_now) - AB_T0)) ms"
}

# per_worker FROM-LINE: "pid=count ..." of the access log from line FROM on.
per_worker() { tail -n +"$1" "$PREFIX/access.log" | awk '{ c[$1]++ } END { for (p in c) printf "%s=%d ", p, c[p] }'; }
log_lines() { wc -l <"$PREFIX/access.log"; }

# check_served NAME FROM PIDS: every pid in PIDS has requests in the log from line FROM on.
check_served() {
    local name=$1 from=$2 pids=$3 counts p
    counts=$(per_worker "$from")
    net_log "[$name] requests per worker: $counts"
    for p in $pids; do
        case " $counts" in *" $p="*) ;; *) net_softfail "[$name] worker $p served no request ($counts)" ;; esac
    done
}

# shellcheck disable=SC2317
old_gone() {
    local p
    for p in $OLD; do proc_alive "$p" && return 1; done
    return 0
}
# shellcheck disable=SC2317
logged_since() { [ "$(log_lines)" -ge $(($1 + $2)) ]; }

# reload_under_load X: `nginx -s reload` while ab runs (once 500 of its requests are logged,
# not after a fixed sleep: a fast ab was done before a reload a second in, and the new
# workers then had nothing to serve): ab fails no request and the old workers exit; then a
# short ab is served by every new worker.
reload_under_load() {
    local x=$1 from running=no
    OLD=$WORKERS
    from=$(($(log_lines) + 1))
    ab_start "$x-reload" -n "$SIDE" -c 200
    wait_until 20 logged_since "$from" 500 || true
    proc_alive "$AB_PID" && running=yes
    timeout 5 "$NGINX" "${NGX_ARGS[@]}" -s reload || net_softfail "[$x] nginx -s reload failed"
    wait_until 20 old_gone || net_softfail "[$x] old workers ($OLD) still run 20 s after the reload"
    WORKERS=$(workers)
    net_log "[$x] reload (ab still running: $running): old workers $OLD gone, new workers $WORKERS"
    ab_check "$x-reload" 1 "$SIDE"
    from=$(($(log_lines) + 1))
    ab_start "$x-after-reload" -n 4000 -c 50
    ab_check "$x-after-reload" 1 4000 && check_served "$x-after-reload" "$from" "$WORKERS"
}

# An EPOLLEXCLUSIVE (1 << 28) registration in some epoll of the process.
has_epollexclusive() {
    local f e
    for f in /proc/"$1"/fdinfo/*; do
        while read -r e; do
            [ $((0x$e & 0x10000000)) != 0 ] && return 0
        done < <(sed -n 's/^tfd: .*events: *\([0-9a-f]*\) .*/\1/p' "$f" 2>/dev/null)
    done
    return 1
}

# quit_nginx NAME: nginx -s quit, master and workers gone within 10 s, then ustackd by itself.
# shellcheck disable=SC2317
ngx_gone() { ! proc_alive "$MASTER" && [ -z "$(u_comm_pids nginx)" ]; }
# shellcheck disable=SC2317
stackd_gone() { ! proc_alive "$USTACKD_PID"; }
quit_nginx() {
    local name=$1 t0
    t0=$(ms_now)
    timeout 5 "$NGINX" "${NGX_ARGS[@]}" -s quit 2>/dev/null || kill -QUIT "$MASTER" 2>/dev/null || true
    if ! wait_until 10 ngx_gone; then
        net_softfail "[$name] nginx still runs 10 s after 'nginx -s quit': $(u_comm_pids nginx | paste -sd ' ')"
        for p in $(u_comm_pids nginx); do kill -KILL "$p" 2>/dev/null || true; done
    fi
    net_log "[$name] nginx gone $(($(ms_now) - t0)) ms after 'nginx -s quit'"
    wait "$MASTER" 2>/dev/null || true
    t0=$(ms_now)
    if wait_until 10 stackd_gone; then
        net_log "[$name] ustackd gone $(($(ms_now) - t0)) ms after nginx"
    else
        net_softfail "[$name] ustackd $USTACKD_PID still runs 10 s after nginx exited"
        kill -KILL "$USTACKD_PID" 2>/dev/null || true
    fi
    USTACKD_PID=""
    net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
    alerts "$name"
}

alerts() {
    if grep -q '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" 2>/dev/null; then
        net_log "[$1] nginx error.log: $(grep '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" | tail -n 3 | tr '\n' ' ' | head -c 400)"
    fi
    : >"$PREFIX/error.log"
}

# ================================================================ A: 2 workers, daemon off

write_conf 2 off off ""
start_nginx A
p1=$(echo "$WORKERS" | cut -d' ' -f1)
if has_epollexclusive "$p1"; then
    net_log "[A] worker $p1 has an EPOLLEXCLUSIVE registration"
else
    net_softfail "[A] worker $p1 has no EPOLLEXCLUSIVE registration (accept_mutex off)"
fi
from=$(($(log_lines) + 1))
ab_start A-close -n "$REQS" -c "$CONC"
ab_check A-close 1 "$REQS" && check_served A-close "$from" "$WORKERS"
from=$(($(log_lines) + 1))
ab_start A-keepalive -k -n "$SIDE" -c "$CONC"
ab_check A-keepalive 1 "$SIDE" && check_served A-keepalive "$from" "$WORKERS"

# -- reload during load
reload_under_load A

# -- a worker SIGKILLed under load
note_stackd
st=""
ustackd_stats st
reaped0=$(stat_sum "$st" shm_procs_reaped)
closes0=$(stat_sum "$st" shm_reclaim_closes)
victim=$(echo "$WORKERS" | cut -d' ' -f1)
ab_start A-kill -n "$SIDE" -c "$CONC"
sleep 1
net_log "[A] SIGKILL worker $victim"
kill -KILL "$victim"
ab_check A-kill 0 "$SIDE" || true
net_log "[A] ab across the kill: $AB_FAILED failed requests (resets of the killed worker's connections)"
ustackd_alive || net_softfail "[A] ustackd died after a worker was killed"
proc_alive "$MASTER" || net_fail "[A] the nginx master died after a worker was killed: $(ngx_errtail)"
WORKERS=$(workers)
case " $WORKERS " in *" $victim "*) net_softfail "[A] killed worker $victim still listed" ;; esac
[ "$(echo "$WORKERS" | wc -w)" = 2 ] || net_softfail "[A] no replacement worker: workers now '$WORKERS'"
ustackd_stats st
reaped=$(stat_sum "$st" shm_procs_reaped)
closes=$(stat_sum "$st" shm_reclaim_closes)
[ "$reaped" -gt "$reaped0" ] || net_softfail "[A] ustackd did not reap the killed worker (shm_procs_reaped $reaped0 -> $reaped)"
# The killed worker held its accepted connections alone: ustackd closed them (reset), and
# ab saw those fail. On a loaded machine the victim may hold none at the moment of the kill
# (the other worker took them all): then nothing fails and nothing is closed.
if [ "${AB_FAILED:-0}" != 0 ] && [ "$closes" -le "$closes0" ]; then
    net_softfail "[A] ab saw $AB_FAILED failures but ustackd closed no connection of the killed worker (shm_reclaim_closes $closes0 -> $closes)"
fi
net_log "[A] ustackd reaped the killed worker: shm_procs_reaped $reaped0 -> $reaped, shm_reclaim_closes $closes0 -> $closes, shm_reclaim_wakes $(stat_sum "$st" shm_reclaim_wakes)"
from=$(($(log_lines) + 1))
ab_start A-after-kill -n "$SIDE" -c "$CONC"
ab_check A-after-kill 1 "$SIDE" && check_served A-after-kill "$from" "$WORKERS"
quit_nginx A

# ================================================================ B: 4 workers, daemon on, accept_mutex on

write_conf 4 on on ""
start_nginx B
from=$(($(log_lines) + 1))
ab_start B-close -n "$REQS" -c "$CONC"
ab_check B-close 1 "$REQS" && check_served B-close "$from" "$WORKERS"
quit_nginx B

# ================================================================ C: auto, daemon on, reuseport

write_conf auto on off " reuseport"
start_nginx C
from=$(($(log_lines) + 1))
ab_start C-close -n "$REQS" -c "$CONC"
ab_check C-close 1 "$REQS" && check_served C-close "$from" "$WORKERS"
{ grep -h '^ustack:' "$NET_TMPD"/nginx.C.err "$PREFIX/error.log" 2>/dev/null || true; } | sort -u | head -n 3 |
    while read -r l; do net_log "[C] $l"; done

# -- reload with reuseport listeners (one per worker, one reuseport group in the stack)
reload_under_load C

# -- ustackd SIGKILLed while a worker sends a large file slowly
net_k timeout -k 2 30 curl -s -o /dev/null --limit-rate 2M --max-time 25 \
    "http://$IP_U/big.bin" 2>/dev/null &
CURL_PID=$!
net_bg "$CURL_PID"
sleep 2
net_log "[C] SIGKILL ustackd $USTACKD_PID"
kill -KILL "$USTACKD_PID"
wait "$USTACKD_PID" 2>/dev/null || true
USTACKD_PID=""
net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
# The worker sending it was asleep in epoll_wait: ustackd's pidfd wakes it, its send fails
# (EPIPE), nginx ends the request and logs it.
# shellcheck disable=SC2317
big_logged() { grep -q ' /big.bin ' "$PREFIX/access.log"; }
t0=$(ms_now)
if wait_until 5 big_logged; then
    net_log "[C] the download's worker ended the request $(($(ms_now) - t0)) ms after ustackd died: $(grep ' /big.bin ' "$PREFIX/access.log" | head -n 1) (error.log: $({ grep -h 'ustack:\|failed (\|closed' "$PREFIX/error.log" || true; } | sed 's/^[0-9/]* [0-9:]* //' | cut -c1-120 | tail -n 3 | tr '\n' ' '))"
else
    net_softfail "[C] the worker sending /big.bin did not end the request within 5 s of ustackd's death"
fi
sleep 1
proc_alive "$MASTER" || net_softfail "[C] the nginx master exited after ustackd was killed"
[ "$(workers)" = "$WORKERS" ] || net_softfail "[C] workers changed after ustackd was killed: '$WORKERS' -> '$(workers)'"
# No worker spins: CPU time over 2 s stays small.
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
declare -A c0
for p in $WORKERS $MASTER; do c0[$p]=$(cpu "$p"); done
sleep 2
for p in $WORKERS $MASTER; do
    d=$(($(cpu "$p") - ${c0[$p]}))
    [ "$d" -le 50 ] || net_softfail "[C] nginx process $p used $d ticks of CPU in 2 s after ustackd died"
done
t0=$(ms_now)
timeout 5 "$NGINX" "${NGX_ARGS[@]}" -s stop 2>/dev/null || kill -TERM "$MASTER" 2>/dev/null || true
if wait_until 5 ngx_gone; then
    net_log "[C] nginx gone $(($(ms_now) - t0)) ms after 'nginx -s stop' with ustackd dead"
else
    net_softfail "[C] nginx still runs 5 s after 'nginx -s stop' with ustackd dead: $(u_comm_pids nginx | paste -sd ' ')"
fi
wait "$CURL_PID" 2>/dev/null || true
alerts C
net_finish
