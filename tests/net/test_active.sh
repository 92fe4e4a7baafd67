#!/bin/bash
# Active opens under ustack: stock clients under LD_PRELOAD=libustack.so (each spawning its
# own ustackd on af_xdp in the ustack namespace) against a stock nginx on kernel sockets in
# the kernel peer's namespace:
#   curl - the 1 MiB and the 100 MiB file, sha256 equal to the originals;
#   ab   - `ab -n 20000 -c 200` without and with keep-alive (-k), ulimit -n 20000: every
#          request complete, none failed, no non-2xx response. Without keep-alive that is
#          20,000 short active connections from one ustackd, which walks the engine's
#          ephemeral ports and meets the kernel's TIME-WAIT for earlier 4-tuples;
#   wrk  - `wrk -t1 -c100 -d5s` (keep-alive): requests > 0, no socket error (connect, read,
#          write, timeout), no non-2xx response.
# After each client exits its ustackd must be gone within 10 s. Every command is bounded;
# teardown kills whatever still runs in the namespaces. A failed check is reported (with
# the tail of that client's ustackd log) and the other checks still run; after each
# client the kernel nginx must hold no connection but TIME-WAIT ones. Runs in about 20-50 s
# (up to about 150 s on a busy machine). Knobs: LIBUSTACK (default build/libustack.so),
# NGINX (default nginx from PATH), NET_ACTIVE_KIND (device, default af_xdp),
# NET_ACTIVE_REQS / NET_ACTIVE_CONC (ab -n / -c), NET_ACTIVE_AB_SECS (bound for one ab run).
# net-timeout: 240
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init active 17
net_require_tools curl ab wrk sha256sum
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
NGINX=${NGINX:-$(command -v nginx || true)}
{ [ -n "$NGINX" ] && [ -x "$NGINX" ]; } || net_fail "nginx not found (tools/deps.sh installs nginx-light)"
KIND=${NET_ACTIVE_KIND:-af_xdp}

REQS=${NET_ACTIVE_REQS:-20000} CONC=${NET_ACTIVE_CONC:-200}
AB_SECS=${NET_ACTIVE_AB_SECS:-90}   # bound for one ab run
BIG_SECS=40         # bound for the 100 MiB download
WRK_SECS=5          # wrk's own duration
GONE_SECS=10        # bound for a ustackd to exit after its client


# ---------------------------------------------------------------- kernel nginx

ngx_prefix
{
    echo '<!DOCTYPE html>'
    echo '<html><head><title>kernel</title></head><body>'
    for i in $(seq 1 20); do echo "<p>kernel nginx for ustack clients, line $i</p>"; done
    echo '</body></html>'
} >"$PREFIX/www/index.html"
make_random "$PREFIX/www/1mb.bin" $((1024 * 1024))
make_random "$PREFIX/www/100mb.bin" $((100 * 1024 * 1024))
SHA_1MB=$(sha "$PREFIX/www/1mb.bin")
SHA_100MB=$(sha "$PREFIX/www/100mb.bin")

ngx_conf 16384 20000 "$NGX_STATIC" "        listen $IP_K:80 backlog=4096;
        server_name kernel;"
chmod -R a+rX "$NET_TMPD"
out=$(net_k timeout 10 "$NGINX" -t "${NGX_ARGS[@]}" 2>&1) || net_fail "nginx -t refused the configuration: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"

# The kernel side must not be what fails: a listen queue as deep as nginx asks for.
net_k sysctl -qw net.core.somaxconn=4096 >/dev/null 2>&1 || true
net_k sysctl -qw net.ipv4.tcp_max_syn_backlog=4096 >/dev/null 2>&1 || true

# ip, sh and env exec (no shell function in between), so $! is the nginx master itself.
# shellcheck disable=SC2016
ip netns exec "$NS_K" sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
    "$NGINX" "${NGX_ARGS[@]}" >"$NET_TMPD/nginx.out" 2>"$NET_TMPD/nginx.err" </dev/null &
NGX_MASTER=$!
net_bg "$NGX_MASTER"
# shellcheck disable=SC2317
ngx_up() { net_k timeout 3 curl -s -o /dev/null --max-time 2 "http://$IP_K/" 2>/dev/null; }
wait_until 15 ngx_up || net_fail "kernel nginx did not answer on $IP_K:80 within 15 s: $(tail -n 2 "$NET_TMPD/nginx.err" "$PREFIX/error.log" 2>/dev/null | tr '\n' ' ' | head -c 300)"
net_log "kernel nginx ready (master $NGX_MASTER)"

# ---------------------------------------------------------------- clients under ustack

# The environment of one preloaded client; ustackd's output goes to stackd.TAG.log, which
# becomes the log shown on failure.
U_ENV=()
u_env() {
    USTACKD_OUT="$NET_TMPD/stackd.$1.log"
    USTACKD_ERR=""
    USTACKD_PID=""
    U_ENV=("LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24"
        "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT")
    [ -n "${NET_USTACK_EAL:-}" ] && U_ENV+=("USTACK_EAL=$NET_USTACK_EAL")
    [ -n "${NET_USTACK_LOG:-}" ] && U_ENV+=("USTACK_LOG=$NET_USTACK_LOG")
    return 0
}

# u_run TAG CMD...: CMD under ustack in the ustack namespace, with ulimit -n 20000 and a
# private bpffs for libxdp (ip-netns-exec's mount namespace; the spawned ustackd inherits
# it). Its exit status is returned.
# shellcheck disable=SC2016
U_SH='[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"'
u_run() {
    u_env "$1"
    shift
    ip netns exec "$NS_U" sh -c "$U_SH" sh "${NET_BPFFS:-1}" "${U_ENV[@]}" "$@"
}

# After a client: its ustackd must be gone within GONE_SECS (a leftover one is reported
# and killed so the next client gets the device).
u_gone() {
    local what=$1 left p
    wait_until "$GONE_SECS" u_no_stackd || true
    left=$(u_stackds | tr '\n' ' ')
    if [ -n "$left" ]; then
        net_softfail "ustackd (pid ${left% }) still runs $GONE_SECS s after $what exited"
        for p in $left; do net__kill_pid "$p" 3; done
    fi
    [ "$KIND" = af_xdp ] && { net_u ip link set "$VETH_U" xdp off 2>/dev/null || true; }
    # What the client opened was closed in order: once it and its ustackd are gone, the
    # kernel nginx holds only TIME-WAIT (it closed first) or nothing (the client did).
    wait_until 5 k_only_tw || net_softfail "after $what exited the kernel nginx still has connections: $(k_states)"
    return 0
}

# The kernel side's connection states on port 80, counted ("3 ESTAB 20000 TIME-WAIT").
k_states() {
    net_k ss -tanH state all "( sport = :80 )" | awk '{ print $1 }' | sort | uniq -c | awk '{ printf "%s%s %s", NR > 1 ? " " : "", $1, $2 }'
}
# shellcheck disable=SC2317
k_only_tw() { ! net_k ss -tanH state all "( sport = :80 )" | awk '{ print $1 }' | grep -qv '^LISTEN$\|^TIME-WAIT$'; }

errtail() { grep -v '^Completed\|^Finished\|^$' "$1" 2>/dev/null | tail -n 2 | tr '\n' ' ' | head -c 300; }

# Whether the kernel nginx still runs, for messages.
alive_msg() { proc_alive "$NGX_MASTER" || printf ' (kernel nginx exited)'; }

# ---------------------------------------------------------------- 1: curl

curl_check() {
    local file=$1 want=$2 secs=$3 got="$NET_TMPD/got.$1" rc=0 t0 ms size
    t0=$(ms_now)
    u_run "curl.$file" timeout -k 2 "$secs" curl -s -S --max-time $((secs - 2)) -o "$got" \
        "http://$IP_K/$file" 2>"$NET_TMPD/curl.$file.err" </dev/null || rc=$?
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
    u_gone "curl $file"
}

curl_check 1mb.bin "$SHA_1MB" 20
curl_check 100mb.bin "$SHA_100MB" "$BIG_SECS"

# ---------------------------------------------------------------- 2: ab

run_ab() {
    local tag=$1 out="$NET_TMPD/ab.$1.out" err="$NET_TMPD/ab.$1.err" rc=0 t0 complete failed non2xx rps
    shift
    t0=$(ms_now)
    u_run "ab.$tag" timeout -k 5 "$AB_SECS" ab "$@" "http://$IP_K/" >"$out" 2>"$err" </dev/null || rc=$?
    complete=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$out")
    failed=$(sed -n 's/^Failed requests: *\([0-9]*\).*/\1/p' "$out")
    non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\).*/\1/p' "$out")
    rps=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$out")
    if [ "$rc" != 0 ] || [ "$complete" != "$REQS" ] || [ "$failed" != 0 ] || [ -n "$non2xx" ]; then
        net_softfail "ab $* under ustack (exit $rc in $(($(ms_now) - t0)) ms): complete '${complete}', failed '${failed}', non-2xx '${non2xx:-0}'$(alive_msg): $(errtail "$err")"
        grep -A 1 '^Failed requests' "$out" | sed 's/^/    /' >&2 || true
    else
        net_log "ab $* under ustack: $rps req/s, $complete complete, 0 failed, 0 non-2xx in $(($(ms_now) - t0)) ms"
    fi
    u_gone "ab $*"
}

run_ab close -n "$REQS" -c "$CONC"
run_ab keepalive -k -n "$REQS" -c "$CONC"

# ---------------------------------------------------------------- 3: wrk

run_wrk() {
    local out="$NET_TMPD/wrk.out" err="$NET_TMPD/wrk.err" rc=0 t0 reqs sockerr non2xx rps
    t0=$(ms_now)
    u_run wrk timeout -k 5 $((WRK_SECS + 20)) wrk "$@" -d "${WRK_SECS}s" "http://$IP_K/" \
        >"$out" 2>"$err" </dev/null || rc=$?
    # "  12345 requests in 5.00s, 1.23MB read"; "  Socket errors: connect 0, read 0, write 0,
    # timeout 0" (only when one is not zero); "  Non-2xx or 3xx responses: N" (likewise).
    reqs=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$out")
    sockerr=$(sed -n 's/^ *Socket errors: *//p' "$out")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' "$out")
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$out")
    if [ "$rc" != 0 ] || [ -z "$reqs" ] || [ "$reqs" = 0 ] || [ -n "$sockerr" ] || [ -n "$non2xx" ]; then
        net_softfail "wrk $* under ustack (exit $rc in $(($(ms_now) - t0)) ms): requests '${reqs}', socket errors '${sockerr:-none}', non-2xx/3xx '${non2xx:-0}'$(alive_msg): $(errtail "$err") $(grep -i error "$out" | head -n 2 | tr '\n' ' ')"
    else
        net_log "wrk $* under ustack: $reqs requests, $rps req/s, no socket error, no non-2xx"
    fi
    u_gone "wrk $*"
}

run_wrk -t1 -c100

# ---------------------------------------------------------------- stop

proc_alive "$NGX_MASTER" || net_softfail "the kernel nginx exited during the test"
kill -QUIT "$NGX_MASTER" 2>/dev/null || true
# shellcheck disable=SC2317
ngx_gone() { ! proc_alive "$NGX_MASTER"; }
wait_until 10 ngx_gone || {
    net_softfail "the kernel nginx did not exit within 10 s of SIGQUIT (connections left: $(net_k ss -tan state established "( sport = :80 )" | tail -n +2 | wc -l))"
    kill -KILL "$NGX_MASTER" 2>/dev/null || true
}
wait "$NGX_MASTER" 2>/dev/null || true
if grep -q '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" 2>/dev/null; then
    net_log "nginx error.log has alerts: $(grep '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" | tail -n 3 | tr '\n' ' ' | head -c 400)"
fi
net_finish
