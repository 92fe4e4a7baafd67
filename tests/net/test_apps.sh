#!/bin/bash
# More stock programs under LD_PRELOAD=libustack.so (af_xdp, one stack core), each against a
# peer on the kernel's sockets, as server and as client:
#   node    - node.js's http module (libuv: epoll, writev, accept4; tests/net/helpers/
#             node_http.js) serving from ustack: "hello" to curl, a 3 MB POST echoed back
#             sha256-equal, a 20,000,000-byte answer with the right content, `ab -k -n 5000
#             -c 100` and `ab -n 2000 -c 50` with no failed or non-2xx request, node's own
#             client (2,000 keep-alive GETs, 300 connections, 20 parallel 256 KiB echoes) all
#             answered right; then the server's count of GETs is exactly the number sent (none
#             lost or served twice). node's cluster (helpers/node_cluster.js): a primary
#             that starts two workers before any socket and passes them each connection;
#             `ab -n 2000 -c 20` with nothing failed, both workers answer, one ustackd. The
#             same client under ustack against a kernel node server;
#   tls     - openssl s_server -www (OpenSSL's own sockets and BIOs) under ustack: curl -k
#             over TLS three times, and `openssl s_time -new` for 3 s completes connections
#             with no error; curl and openssl s_client under ustack against a kernel s_server;
#   asyncio - Python asyncio streams (tests/net/helpers/async_echo.py): 200 connections at once
#             each echoing 200,000 random bytes equal, the server under ustack, then the
#             client under ustack;
#   wget    - wget under ustack fetches 5 MB from a kernel `python3 -m http.server`, equal.
# Every program is bounded (timeout); teardown kills whatever still runs in the namespaces.
# A failed check is reported (with the tail of ustackd's log) and the other checks still run.
# About 25 s. Knobs: NET_APPS_KIND (device, default af_xdp), LIBUSTACK.
# net-timeout: 300
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init apps 23
net_require_tools node openssl curl ab wget python3 sha256sum cmp
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
KIND=${NET_APPS_KIND:-af_xdp}
HELP="$NET_ROOT/tests/net/helpers"

# u_reset: end the ustack namespace's ustackd (the next program spawns its own) and take
# its XDP program off the veth.
u_reset() {
    local p
    for p in $(u_stackds); do net__kill_pid "$p" 3; done
    [ "$KIND" = af_xdp ] && net_u ip link set "$VETH_U" xdp off 2>/dev/null
    return 0
}

# u_server TAG PORT CMD...: CMD under ustack in the background (output in $NET_TMPD/TAG.out),
# listening on PORT of ustack's address within 20 s, or the test fails. Sets SP.
u_server() {
    local tag=$1 port=$2
    shift 2
    u_reset
    u_env "$KIND" "$tag"
    u_bg "${U_ENV[@]}" timeout -k 5 120 "$@" >"$NET_TMPD/$tag.out" 2>&1 </dev/null
    SP=$U_BG
    wait_listen "$SP" "$port" || net_fail "$tag under ustack does not listen on $port: $(tail -n 3 "$NET_TMPD/$tag.out" | tr '\n' ' ' | head -c 300)"
    u_note_stackd
    [ -n "$(u_stackds)" ] || net_softfail "$tag: no ustackd runs for it (not under ustack?)"
}

# k_server TAG PORT CMD...: CMD on the kernel side in the background, listening within 20 s.
k_server() {
    local tag=$1 port=$2 end=$((SECONDS + 20)) pid
    shift 2
    net_k timeout -k 5 120 "$@" >"$NET_TMPD/$tag.out" 2>&1 </dev/null &
    pid=$!
    net_bg "$pid"
    while ! net_k nc -z -w 1 "$IP_K" "$port" 2>/dev/null; do
        if [ "$SECONDS" -ge "$end" ] || ! proc_alive "$pid"; then
            net_fail "kernel $tag does not listen: $(tail -n 3 "$NET_TMPD/$tag.out" | tr '\n' ' ')"
        fi
        sleep 0.1
    done
}

# u_client TAG CMD...: CMD under ustack (a ustackd of its own), its output and errors without
# the library's `ustack:` lines.
u_client() {
    local tag=$1
    shift
    u_env "$KIND" "$tag"
    u_exec "${U_ENV[@]}" "$@" 2>&1 | grep -v '^ustack' || true
}

# expect TAG WANT GOT: a check; GOT must equal WANT.
expect() {
    if [ "$3" = "$2" ]; then net_log "$1: $3"; else net_softfail "$1: '$(head -c 300 <<<"$3" | tr '\n' ' ')', wanted '$2'"; fi
}

# ab_ok TAG ARGS...: a bounded ab run from the kernel side; every request complete, none
# failed, none non-2xx.
ab_ok() {
    local tag=$1 n=$2 out="$NET_TMPD/ab.$1"
    shift 2
    net_k timeout -k 5 90 ab -q -r -s 15 -n "$n" "$@" >"$out" 2>&1 || true
    local ndone failed non2xx
    ndone=$(sed -n 's/^Complete requests: *//p' "$out")
    failed=$(sed -n 's/^Failed requests: *//p' "$out")
    non2xx=$(sed -n 's/^Non-2xx responses: *//p' "$out")
    if [ "$ndone" = "$n" ] && [ "$failed" = 0 ] && [ -z "$non2xx" ]; then
        net_log "$tag: ab -n $n $*: $n complete, 0 failed, $(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$out") req/s"
    else
        net_softfail "$tag: ab -n $n $*: complete '$ndone', failed '$failed', non-2xx '${non2xx:-0}': $(grep -v '^$' "$out" | tail -n 2 | tr '\n' ' ' | head -c 200)"
    fi
}

# ---------------------------------------------------------------- node.js

u_server node 8080 node "$HELP/node_http.js" server "$IP_U" 8080
expect "node: curl GET /" hello "$(net_k curl -s --max-time 10 "http://$IP_U:8080/")"
make_random "$NET_TMPD/body" 3000000
expect "node: a 3 MB POST echoed, sha256" "$(sha "$NET_TMPD/body")" \
    "$(net_k curl -s --max-time 30 --data-binary @"$NET_TMPD/body" "http://$IP_U:8080/echo" | sha256sum | cut -d' ' -f1)"
want=$(python3 -c 'import hashlib; print(hashlib.sha256(bytes((i * 7) & 255 for i in range(20000000))).hexdigest())')
expect "node: a 20,000,000-byte answer, sha256" "$want" \
    "$(net_k curl -s --max-time 30 "http://$IP_U:8080/big?n=20000000" | sha256sum | cut -d' ' -f1)"
# -k: ab asks HTTP/1.0 keep-alive, which node declines (it closes each connection).
ab_ok node 5000 -k -c 100 "http://$IP_U:8080/"
ab_ok node 2000 -c 50 "http://$IP_U:8080/"
expect "node: node's client from the kernel side" "good 2320 of 2320" \
    "$(net_k timeout 90 node "$HELP/node_http.js" client "$IP_U" 8080 2000 300 20 2>&1)"
# curl 1 + ab 5000 + 2000 + node's client 2000 + 300: every GET of / served exactly once.
expect "node: GETs of / the server counted" 9301 "$(net_k curl -s --max-time 10 "http://$IP_U:8080/count")"
proc_alive "$SP" || net_softfail "node under ustack exited: $(tail -n 3 "$NET_TMPD/node.out" | tr '\n' ' ')"
stop_bg "$SP"

# node's cluster: the primary forks two workers before it has a socket, then passes them
# every connection it accepts. They share its region because it attaches when it starts them
# while it holds their IPC channel (USTACK_ATTACH_EARLY unset, docs/preload.md "Passing
# sockets"): both workers answer, nothing fails.
u_server cluster 8082 node "$HELP/node_cluster.js" "$IP_U" 8082
wait_for 20 grep -q '^listening' "$NET_TMPD/cluster.out" || net_softfail "cluster: the workers did not both listen: $(tail -n 3 "$NET_TMPD/cluster.out" | tr '\n' ' ')"
ab_ok cluster 2000 -c 20 "http://$IP_U:8082/"
seen=$(for i in 1 2 3 4 5 6; do net_k curl -s --max-time 10 "http://$IP_U:8082/"; done | sort -u | paste -sd, -)
expect "cluster: the workers that answered six curls" "worker 1,worker 2" "$seen"
expect "cluster: ustackd processes for the primary and its workers" 1 "$(u_stackds | wc -l)"
stop_bg "$SP"

u_reset
k_server nodek 8081 node "$HELP/node_http.js" server "$IP_K" 8081
expect "node: node's client under ustack against a kernel node server" "good 2320 of 2320" \
    "$(u_client nodecli timeout 90 node "$HELP/node_http.js" client "$IP_K" 8081 2000 300 20)"

# ---------------------------------------------------------------- TLS (OpenSSL)

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$NET_TMPD/key.pem" -out "$NET_TMPD/cert.pem" \
    -days 2 -subj /CN=ustack >/dev/null 2>&1 || net_fail "openssl req could not make a certificate"
TLS=(-cert "$NET_TMPD/cert.pem" -key "$NET_TMPD/key.pem" -www)
u_server tls 4433 openssl s_server -accept "$IP_U:4433" "${TLS[@]}"
for i in 1 2 3; do
    expect "tls: curl -k https:// #$i, s_server's status page" 1 \
        "$(net_k curl -sk --max-time 10 "https://$IP_U:4433/" | grep -c 'Ciphers supported')"
done
out=$(net_k timeout 30 openssl s_time -connect "$IP_U:4433" -new -time 3 2>&1) || true
conns=$(sed -n 's/^\([0-9][0-9]*\) connections in [0-9.]* real seconds.*/\1/p' <<<"$out" | head -n 1)
if [ "${conns:-0}" -gt 0 ] && ! grep -qi 'error' <<<"$out"; then
    net_log "tls: openssl s_time -new: $conns connections in 3 s, no error"
else
    net_softfail "tls: openssl s_time: $(tail -n 3 <<<"$out" | tr '\n' ' ' | head -c 300)"
fi
proc_alive "$SP" || net_softfail "s_server under ustack exited: $(tail -n 3 "$NET_TMPD/tls.out" | tr '\n' ' ')"
stop_bg "$SP"

u_reset
k_server tlsk 4434 openssl s_server -accept "$IP_K:4434" "${TLS[@]}"
expect "tls: curl -k under ustack against a kernel s_server" 1 \
    "$(u_client tlscli timeout 30 curl -sk "https://$IP_K:4434/" | grep -c 'Ciphers supported')"
expect "tls: openssl s_client under ustack" 1 \
    "$( (printf 'GET / HTTP/1.0\r\n\r\n'; sleep 3) | u_client tlscli timeout 30 openssl s_client -connect "$IP_K:4434" -quiet | grep -c 'Ciphers supported')"

# ---------------------------------------------------------------- Python asyncio

u_server asyncio 7000 python3 "$HELP/async_echo.py" server "$IP_U" 7000
expect "asyncio: 200 connections x 200,000 bytes echoed by the server under ustack" "good 200 of 200" \
    "$(net_k timeout 120 python3 "$HELP/async_echo.py" client "$IP_U" 7000 200 200000 2>&1 | sed 's/ *$//')"
stop_bg "$SP"

u_reset
k_server asynciok 7001 python3 "$HELP/async_echo.py" server "$IP_K" 7001
expect "asyncio: the client under ustack, 200 connections x 200,000 bytes" "good 200 of 200" \
    "$(u_client asynciocli timeout 120 python3 "$HELP/async_echo.py" client "$IP_K" 7001 200 200000 | sed 's/ *$//')"

# ---------------------------------------------------------------- wget

mkdir -p "$NET_TMPD/www"
make_random "$NET_TMPD/www/f.bin" 5000000
k_server httpk 8000 python3 -m http.server 8000 --bind "$IP_K" --directory "$NET_TMPD/www"
u_client wget timeout 60 wget -q -O "$NET_TMPD/got.bin" "http://$IP_K:8000/f.bin"
if cmp -s "$NET_TMPD/www/f.bin" "$NET_TMPD/got.bin"; then
    net_log "wget under ustack: 5 MB equal"
else
    net_softfail "wget under ustack: $(fsize "$NET_TMPD/got.bin" 2>/dev/null || echo no) bytes, not the 5 MB served"
fi
u_reset
net_finish
