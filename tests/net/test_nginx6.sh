#!/bin/bash
# Stock nginx under LD_PRELOAD=libustack.so with IPv6 listeners (AF_INET6 sockets served by
# ustack, docs/preload.md "IPv6"). ustackd has USTACK_IP=198.18.21.2/24 and
# USTACK_IP6=2001:2:0:21::2/64 (RFC 5180's benchmarking prefix); the kernel peer has .1 and
# ::1 of them. nginx listens the way Debian's default site does, `listen 80; listen [::]:80;`
# (nginx makes [::]:80 IPv6-only), and dual-stack on 8080 (`listen [::]:8080 ipv6only=off`).
# From the kernel namespace, each a 4 MiB random file, sha256 equal to the original:
#   curl -4 http://IP/          (the AF_INET listener)
#   curl -6 -g http://[IP6]/    (the IPv6-only AF_INET6 listener)
#   curl -4 http://IP:8080/     (the dual-stack listener: a v4-mapped peer)
#   curl -6 -g http://[IP6]:8080/
# After each download ustackd's counters (SIGUSR1) must have moved: shm_accepts by one,
# shm_tx_bytes by at least the file's size, and ip6_out (IPv6 packets sent) by at least
# size / MSS for the IPv6 ones and not at all for the IPv4 ones: the traffic went through
# ustack and the right family. Then from the ustack namespace, without the library, curl to
# http://127.0.0.1:8080/ and http://[::1]:8080/ (the dual-stack listener's loopback
# listeners, through the kernel) must answer with index.html. nginx's access log must show
# the IPv6 client as 2001:2:0:21::1 and the IPv4 one of 8080 as ::ffff:198.18.21.1 (what
# accept() gave it: v4-mapped, as on the kernel). SIGQUIT ends nginx; ustackd must exit by
# itself. Last, the switch: AF_INET6 TCP and UDP sockets are ustack's eventfds by default,
# the kernel's with USTACK_INET6=0, and UDP alone the kernel's with USTACK_UDP=0.
# net-timeout: 240
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init nginx6 21
net_require_tools curl sha256sum
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
NGINX=${NGINX:-$(command -v nginx || true)}
{ [ -n "$NGINX" ] && [ -x "$NGINX" ]; } || net_fail "nginx not found (tools/deps.sh installs nginx-light)"
KIND=${NET_NGINX_KIND:-af_packet}

# IPv6 on the kernel's end (lib.sh turns it off everywhere) and on the ustack side's
# loopback (::1); the ustack side's veth keeps it off: ustack owns that link.
K6="2001:2:0:$NET_X::1"
U6="2001:2:0:$NET_X::2"
for k in "net.ipv6.conf.all.disable_ipv6=0" "net.ipv6.conf.$VETH_K.disable_ipv6=0" \
    "net.ipv6.conf.$VETH_K.accept_dad=0" "net.ipv6.conf.$VETH_K.accept_ra=0"; do
    net_k sysctl -qw "$k" >/dev/null || net_fail "sysctl $k failed in the kernel namespace"
done
net_u sysctl -qw net.ipv6.conf.lo.disable_ipv6=0 >/dev/null || net_fail "no IPv6 on the ustack side's lo"
ip -n "$NS_K" -6 addr add "$K6/64" dev "$VETH_K" nodad || net_fail "cannot add $K6 to $VETH_K"

ngx_prefix
{
    echo '<!DOCTYPE html>'
    echo '<html><head><title>ustack over IPv6</title></head><body>'
    for i in $(seq 1 20); do echo "<p>nginx on ustack, line $i</p>"; done
    echo '</body></html>'
} >"$PREFIX/www/index.html"
SIZE=$((4 * 1024 * 1024))
make_random "$PREFIX/www/4mb.bin" "$SIZE"
SHA_INDEX=$(sha "$PREFIX/www/index.html")
SHA_4MB=$(sha "$PREFIX/www/4mb.bin")

ngx_conf 1024 "" "    types {
        text/html html;
        application/octet-stream bin;
    }
    default_type application/octet-stream;
    log_format peer '\$remote_addr \$server_port \$request_uri';
    access_log $PREFIX/access.log peer;
    sendfile on;" '        listen 80;
        listen [::]:80;
        listen [::]:8080 ipv6only=off;'
chmod -R a+rX "$NET_TMPD"
out=$(timeout 10 "$NGINX" -t "${NGX_ARGS[@]}" 2>&1) || net_fail "nginx -t refused the configuration: $(printf '%s' "$out" | tail -n 2 | tr '\n' ' ')"

ms_now() { echo $(($(date +%s%N) / 1000000)); }

ngx_errtail() {
    { grep -h '\[emerg\]\|\[alert\]\|\[crit\]\|^ustack:' "$PREFIX/error.log" "$NET_TMPD/nginx.err"; tail -n 1 "$NET_TMPD/nginx.err"; } \
        2>/dev/null | uniq | tail -n 3 | tr '\n' ' ' | head -c 400
}

u_env "$KIND" nginx
U_ENV+=("USTACK_IP6=$U6/64")
net_log "start nginx: ${U_ENV[*]} $NGINX ${NGX_ARGS[*]}"
u_bg "${U_ENV[@]}" "$NGINX" "${NGX_ARGS[@]}" >"$NET_TMPD/nginx.out" 2>"$NET_TMPD/nginx.err" </dev/null
NGX_MASTER=$U_BG
t0=$(ms_now)
ready=0 code=""
while [ $(($(ms_now) - t0)) -lt 30000 ]; do
    proc_alive "$NGX_MASTER" || break
    code=$(net_k timeout 5 curl -s -o "$NET_TMPD/index.got" -w '%{http_code}' --max-time 2 "http://$IP_U/" 2>/dev/null) || true
    if [ "$code" = 200 ]; then ready=1; break; fi
    sleep 0.2
done
USTACKD_PID=$(u_stackds | head -n 1)
[ -n "$USTACKD_PID" ] && NET_USTACKD_PIDS="$NET_USTACKD_PIDS $USTACKD_PID"
if [ "$ready" != 1 ]; then
    proc_alive "$NGX_MASTER" || net_fail "nginx under ustack exited before answering: $(ngx_errtail)"
    net_fail "nginx under ustack did not answer http://$IP_U/ within 30 s (last HTTP code '$code'): $(ngx_errtail)"
fi
[ -n "$USTACKD_PID" ] || net_fail "no ustackd in the ustack namespace"
[ "$(sha "$NET_TMPD/index.got")" = "$SHA_INDEX" ] || net_softfail "GET / returned a body different from index.html"
net_log "nginx ready after $(($(ms_now) - t0)) ms, ustackd $USTACKD_PID"

# counters SHM_ACCEPTS SHM_TX_BYTES IP6_OUT, summed over cores, into the named variables.
counters() {
    local sf=""
    ustackd_stats sf
    printf -v "$1" '%s' "$(stat_sum "$sf" shm_accepts)"
    printf -v "$2" '%s' "$(stat_sum "$sf" shm_tx_bytes)"
    printf -v "$3" '%s' "$(stat_sum "$sf" ip6_out)"
}

# fetch FAMILY URL SIX: one download, checked byte for byte and against the counters.
fetch() {
    local fam=$1 url=$2 six=$3 got="$NET_TMPD/got" rc=0 a0 t0 i0 a1 t1 i1 ms
    counters a0 t0 i0
    ms=$(ms_now)
    net_k timeout -k 2 30 curl "$fam" -g -s -S --max-time 28 -o "$got" "$url" \
        2>"$NET_TMPD/curl.err" || rc=$?
    ms=$(($(ms_now) - ms))
    counters a1 t1 i1
    if [ "$rc" != 0 ]; then
        net_softfail "curl $fam $url exited $rc after $ms ms: $(head -c 200 "$NET_TMPD/curl.err" | tr '\n' ' ')"
        return 0
    fi
    if [ "$(sha "$got")" != "$SHA_4MB" ]; then
        net_softfail "curl $fam $url: sha256 differs ($(fsize "$got") bytes of $SIZE)"
        return 0
    fi
    [ $((a1 - a0)) -ge 1 ] || net_softfail "curl $fam $url: shm_accepts did not move ($a0 -> $a1): not accepted by ustack"
    [ $((t1 - t0)) -ge "$SIZE" ] || net_softfail "curl $fam $url: shm_tx_bytes moved by $((t1 - t0)), less than $SIZE"
    if [ "$six" = 1 ]; then
        [ $((i1 - i0)) -ge $((SIZE / 1440)) ] || net_softfail "curl $fam $url: ip6_out moved by $((i1 - i0)) only"
    else
        [ "$i1" = "$i0" ] || net_softfail "curl $fam $url: ip6_out moved ($i0 -> $i1) for an IPv4 download"
    fi
    net_log "curl $fam $url: $SIZE bytes, sha256 equal, in $ms ms; shm_accepts +$((a1 - a0)), shm_tx_bytes +$((t1 - t0)), ip6_out +$((i1 - i0))"
    rm -f "$got"
}

fetch -4 "http://$IP_U/4mb.bin" 0
fetch -6 "http://[$U6]/4mb.bin" 1
fetch -4 "http://$IP_U:8080/4mb.bin" 0
fetch -6 "http://[$U6]:8080/4mb.bin" 1

# Loopback through the dual-stack listener's kernel listeners (no library: plain curl).
for url in "http://127.0.0.1:8080/" "http://[::1]:8080/"; do
    code=$(net_u timeout 10 curl -g -s -o "$NET_TMPD/lo.got" -w '%{http_code}' --max-time 8 "$url" 2>/dev/null) || true
    if [ "$code" != 200 ] || [ "$(sha "$NET_TMPD/lo.got")" != "$SHA_INDEX" ]; then
        net_softfail "loopback $url: HTTP '$code'"
    else
        net_log "loopback $url: 200, index.html"
    fi
done

# What nginx saw as the peers (it logs a v4-mapped address as IPv4).
grep -q "^$K6 80 /4mb.bin\$" "$PREFIX/access.log" || net_softfail "access.log has no '$K6 80': $(tr '\n' ';' <"$PREFIX/access.log" | head -c 300)"
grep -q "^$K6 8080 /4mb.bin\$" "$PREFIX/access.log" || net_softfail "access.log has no '$K6 8080'"
grep -q "^::ffff:$IP_K 8080 /4mb.bin\$" "$PREFIX/access.log" || net_softfail "access.log has no '::ffff:$IP_K 8080'"
grep -q "^::1 8080 /\$" "$PREFIX/access.log" || net_softfail "access.log has no '::1 8080'"

# ---------------------------------------------------------------- stop

proc_alive "$NGX_MASTER" || net_softfail "the nginx master exited during the test: $(ngx_errtail)"
# shellcheck disable=SC2317
ngx_gone() { ! proc_alive "$NGX_MASTER"; }
# shellcheck disable=SC2317
stackd_gone() { ! proc_alive "$USTACKD_PID"; }
kill -QUIT "$NGX_MASTER" 2>/dev/null || true
wait_until 10 ngx_gone || {
    net_softfail "nginx master did not exit within 10 s of SIGQUIT: killed"
    kill -KILL "$NGX_MASTER" 2>/dev/null || true
}
wait "$NGX_MASTER" 2>/dev/null || true
if wait_until 10 stackd_gone; then
    USTACKD_PID=""
else
    net_softfail "ustackd (pid $USTACKD_PID) still runs 10 s after nginx exited"
fi

# ---------------------------------------------------------------- the switch

# What AF_INET6 TCP and UDP sockets are under the library: "socket:[...]" (the kernel's) or
# "anon_inode:[eventfd]" (ustack's), one line each.
PY=$(command -v python3 || true)
INET6KIND='import os, socket
for t in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    try:
        s = socket.socket(socket.AF_INET6, t)
        print(os.readlink("/proc/self/fd/%d" % s.fileno()).split(":")[0])
    except OSError as e:
        print("error", e.errno)'
# switch EXPECTED ENV...: one run (its ustackd exits with it), both kinds as expected.
switch() {
    local want=$1 got i
    shift
    got=$(u_exec "${U_ENV[@]}" "$@" timeout 20 "$PY" -c "$INET6KIND" 2>/dev/null | paste -sd " ") || true
    if [ "$got" = "$want" ]; then
        net_log "${*:-default}: AF_INET6 TCP and UDP sockets: $got"
    else
        net_softfail "${*:-default}: AF_INET6 TCP and UDP sockets are '$got', expected '$want'"
    fi
    for ((i = 0; i < 100; i++)); do
        [ -z "$(u_stackds)" ] && break
        sleep 0.1
    done
}
if [ -n "$PY" ]; then
    switch "anon_inode anon_inode"
    switch "socket socket" USTACK_INET6=0
    switch "anon_inode socket" USTACK_UDP=0
else
    net_softfail "no python3 for the USTACK_INET6 check"
fi

if grep -q '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" 2>/dev/null; then
    net_softfail "nginx error.log has alerts: $(grep '\[alert\]\|\[emerg\]\|\[crit\]' "$PREFIX/error.log" | tail -n 3 | tr '\n' ' ' | head -c 400)"
fi
net_finish
