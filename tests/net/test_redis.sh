#!/bin/bash
# Stock Debian redis (redis-server, redis-cli, redis-benchmark) under
# LD_PRELOAD=libustack.so, both as the server and as the client, against the kernel peer:
#   server  - redis-server under ustack (af_xdp, one stack core), bound to ustack's address;
#             from the kernel side: PING; a 1 MiB value SET and read back equal; 20,000
#             INCRs from redis-benchmark over 50 connections and 20,000 more pipelined 32 deep
#             over 200 connections, after which the counter is exactly 40,000 (no request
#             lost or run twice); 20,000 LPUSHes, after which LLEN is 20,000; MSET/GET mixes;
#             a BGSAVE (a fork child that closes the listener), after which a new
#             connection still answers PING; then SHUTDOWN NOSAVE, and redis and its
#             ustackd are gone within 10 s;
#   client  - redis-benchmark and redis-cli under ustack against a kernel redis-server in
#             the kernel namespace: 20,000 INCRs over 50 connections, then the counter, read
#             by a kernel redis-cli, is exactly 20,000; ustackd counted the segments;
#   memcached - stock memcached (libevent, TCP and UDP) under ustack: a 500,000-byte value
#             read back equal, 300 connections each an incr (the counter is 300 after), a
#             get over UDP.
# Every program is bounded (timeout); teardown kills whatever still runs in the namespaces.
# A failed check is reported (with the tail of ustackd's log) and the other checks still run.
# Knobs: NET_REDIS_KIND (device, default af_xdp), NET_REDIS_N (requests per benchmark run),
# LIBUSTACK, REDIS_SERVER.
# net-timeout: 300
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init redis 21
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || true)}
[ -n "$REDIS_SERVER" ] || net_fail "redis-server not found (tools/deps.sh installs redis-server)"
net_require_tools redis-cli redis-benchmark sha256sum
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
KIND=${NET_REDIS_KIND:-af_xdp}
N=${NET_REDIS_N:-20000}
PORT=6379
RDIR="$NET_TMPD/redis"
mkdir -p "$RDIR"

# redis-server in the foreground, no persistence, no protected mode (the kernel side is
# another host), its files in the test's directory. Args: bind address, then extra options.
redis_args() {
    printf '%s\n' --port "$PORT" --bind "$1" --protected-mode no --save '' --appendonly no \
        --daemonize no --dir "$RDIR" --logfile "" --maxclients 10000
}

# wait_ping RUNNER ADDR PID: true once `redis-cli ping` through RUNNER answers PONG
# (20 s at most, or until PID exits).
wait_ping() {
    local run=$1 addr=$2 pid=$3 end=$((SECONDS + 20)) got
    while [ "$SECONDS" -lt "$end" ] && proc_alive "$pid"; do
        got=$($run timeout 3 redis-cli -h "$addr" -p "$PORT" ping 2>/dev/null) || true
        [ "$got" = PONG ] && return 0
        sleep 0.2
    done
    return 1
}

# kcli ARGS...: redis-cli from the kernel side against ustack's redis.
kcli() { net_k timeout 20 redis-cli -h "$IP_U" -p "$PORT" "$@"; }

# bench RUNNER HOST TAG ARGS...: a bounded redis-benchmark run; its output in
# $NET_TMPD/bench.TAG; false (with a failure reported) when it exits non-zero or reports an
# error.
bench() {
    local run=$1 host=$2 tag=$3 rc=0 out="$NET_TMPD/bench.$3"
    shift 3
    # shellcheck disable=SC2016
    $run sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
        timeout -k 5 90 redis-benchmark -h "$host" -p "$PORT" -q "$@" >"$out" 2>&1 </dev/null || rc=$?
    if [ "$rc" != 0 ] || grep -v '^ustack' "$out" | grep -qi 'error\|could not connect\|refused\|reset'; then
        net_softfail "$tag: redis-benchmark $* exited $rc: $(tr '\r' '\n' <"$out" | grep -v '^$' | tail -n 3 | tr '\n' ' ' | head -c 300)"
        return 1
    fi
    net_log "$tag: redis-benchmark $*: $(tr '\r' '\n' <"$out" | grep 'requests per second' | sed 's/, p50.*//' | paste -sd ';' | head -c 200)"
}

# ---------------------------------------------------------------- 1: the server under ustack

u_env "$KIND" server
mapfile -t ARGS < <(redis_args "$IP_U")
# shellcheck disable=SC2016
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"' sh "${NET_BPFFS:-1}" \
    "${U_ENV[@]}" timeout -k 5 240 "$REDIS_SERVER" "${ARGS[@]}" >"$NET_TMPD/redis.u.out" 2>&1 </dev/null &
RS=$!
net_bg "$RS"
if ! wait_ping net_k "$IP_U" "$RS"; then
    net_fail "redis-server under ustack does not answer PING from the kernel side: $(tail -n 3 "$NET_TMPD/redis.u.out" | tr '\n' ' ' | head -c 300)"
fi
u_note_stackd
net_log "redis-server under ustack answers PING (redis $RS, ustackd ${USTACKD_PID:-?})"

# A 1 MiB value (hex text: redis-cli prints it back unchanged) in and out.
head -c $((512 * 1024)) /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$NET_TMPD/big.txt"
want=$(sha "$NET_TMPD/big.txt")
got=$(net_k timeout 20 redis-cli -h "$IP_U" -p "$PORT" -x SET big <"$NET_TMPD/big.txt" 2>&1) || true
if [ "$got" != OK ]; then
    net_softfail "SET of a 1 MiB value: '$(head -c 200 <<<"$got")'"
else
    kcli GET big 2>/dev/null | head -c $((1024 * 1024)) >"$NET_TMPD/big.got" || true
    if [ "$(sha "$NET_TMPD/big.got")" = "$want" ]; then
        net_log "a 1 MiB value SET and read back equal"
    else
        net_softfail "GET big: $(fsize "$NET_TMPD/big.got") bytes, differing from the 1 MiB SET"
    fi
fi

# INCR: every request counted exactly once, plain and pipelined.
kcli DEL counter:__rand_int__ mylist >/dev/null 2>&1 || true
bench net_k "$IP_U" incr -n "$N" -c 50 -t incr || true
bench net_k "$IP_U" incr-pipelined -n "$N" -c 200 -P 32 -t incr || true
got=$(kcli GET counter:__rand_int__ 2>&1) || true
if [ "$got" = $((2 * N)) ]; then
    net_log "the counter is $got after $((2 * N)) INCRs (50 connections, then 200 pipelined 32 deep)"
else
    net_softfail "the counter is '$got' after $((2 * N)) INCRs"
fi
bench net_k "$IP_U" lpush -n "$N" -c 100 -t lpush || true
got=$(kcli LLEN mylist 2>&1) || true
if [ "$got" = "$N" ]; then net_log "LLEN mylist is $got after $N LPUSHes"; else
    net_softfail "LLEN mylist is '$got' after $N LPUSHes"
fi
bench net_k "$IP_U" mix -n "$N" -c 100 -r 1000 -t set,get,mset,hset,sadd || true

# BGSAVE: redis's fork child closes the listener it inherited, and redis must go on
# accepting. Before 2026-11-28 the child's close took the listener out of the parent's
# epoll (shared across fork): every later connection waited unanswered.
got=$(kcli BGSAVE 2>&1) || true
end=$((SECONDS + 20))
while [ "$SECONDS" -lt "$end" ] && [ ! -s "$RDIR/dump.rdb" ]; do sleep 0.2; done
sleep 0.5
got2=$(net_k timeout 5 redis-cli -h "$IP_U" -p "$PORT" ping 2>&1) || true
if [ -s "$RDIR/dump.rdb" ] && [ "$got2" = PONG ]; then
    net_log "BGSAVE ($(fsize "$RDIR/dump.rdb") bytes), then a new connection answers PONG"
else
    net_softfail "BGSAVE: '$(head -c 100 <<<"$got")', dump $(fsize "$RDIR/dump.rdb" 2>/dev/null || echo none), then PING on a new connection: '$(head -c 100 <<<"$got2")'"
fi
rm -f "$RDIR/dump.rdb" # the kernel redis-server below starts in the same directory

ustackd_stats FS
segs=$(stat_sum "$FS" tcp_in)
if [ "${segs:-0}" -gt $((3 * N)) ]; then net_log "server: ustackd took $segs TCP segments in"; else
    net_softfail "server: ustackd counted only '${segs}' TCP segments in"
fi
kcli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
end=$((SECONDS + 10))
while [ "$SECONDS" -lt "$end" ] && proc_alive "$RS"; do sleep 0.1; done
if proc_alive "$RS"; then
    net_softfail "redis-server under ustack still runs 10 s after SHUTDOWN NOSAVE"
else
    wait "$RS" 2>/dev/null || true
    end=$((SECONDS + 10))
    while [ "$SECONDS" -lt "$end" ] && [ -n "$(u_stackds)" ]; do sleep 0.1; done
    if [ -n "$(u_stackds)" ]; then
        net_softfail "ustackd still runs 10 s after redis-server exited"
    else
        net_log "SHUTDOWN NOSAVE: redis-server exited, then its ustackd"
    fi
fi
for p in $(u_stackds); do net__kill_pid "$p" 3; done
[ "$KIND" = af_xdp ] && net_u ip link set "$VETH_U" xdp off 2>/dev/null

# ---------------------------------------------------------------- 2: the client under ustack

mapfile -t ARGS < <(redis_args "$IP_K")
# shellcheck disable=SC2016
net_k sh -c 'ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"' sh \
    timeout -k 5 200 "$REDIS_SERVER" "${ARGS[@]}" >"$NET_TMPD/redis.k.out" 2>&1 </dev/null &
KS=$!
net_bg "$KS"
wait_ping net_k "$IP_K" "$KS" || net_fail "the kernel redis-server does not answer: $(tail -n 2 "$NET_TMPD/redis.k.out" | tr '\n' ' ')"
u_env "$KIND" client
U_ENV+=(USTACK_LOG=info) # ustackd prints its statistics when it stops
urun() { u_exec "${U_ENV[@]}" "$@"; }
got=$(urun timeout 20 redis-cli -h "$IP_K" -p "$PORT" ping 2>&1) || true
if [ "$got" = PONG ]; then net_log "redis-cli under ustack: PONG from the kernel redis"; else
    net_softfail "redis-cli under ustack: '$(head -c 200 <<<"$got")'"
fi
bench urun "$IP_K" client-incr -n "$N" -c 50 -t incr || true
got=$(net_k timeout 10 redis-cli -h "$IP_K" -p "$PORT" GET counter:__rand_int__ 2>&1) || true
if [ "$got" = "$N" ]; then net_log "client: the kernel redis counted $got INCRs from redis-benchmark under ustack"; else
    net_softfail "client: the counter is '$got' after $N INCRs from redis-benchmark under ustack"
fi
end=$((SECONDS + 10))
while [ "$SECONDS" -lt "$end" ] && [ -n "$(u_stackds)" ]; do sleep 0.1; done
if [ -s "$USTACKD_OUT" ] && grep -q '^ustackd: stats end' "$USTACKD_OUT"; then
    ustackd_final_stats FS
    segs=$(stat_sum "$FS" tcp_out)
    if [ "${segs:-0}" -gt "$N" ]; then net_log "client: ustackd sent $segs TCP segments"; else
        net_softfail "client: ustackd counted only '${segs}' TCP segments out"
    fi
else
    net_softfail "client: no final statistics from the client's ustackd ($USTACKD_OUT)"
fi

# ---------------------------------------------------------------- 3: memcached under ustack

# Stock memcached (libevent, two worker threads, TCP and UDP) under ustack; from the kernel
# side a Python client: a 500,000-byte value set and read back equal, 300 short connections
# each an incr of one counter (exactly 300 after), and a get over UDP (memcached's 8-byte
# frame header).
MEMCACHED=${MEMCACHED:-$(command -v memcached || true)}
if [ -z "$MEMCACHED" ]; then
    net_softfail "memcached not found (tools/deps.sh installs memcached)"
else
    for p in $(u_stackds); do net__kill_pid "$p" 3; done
    [ "$KIND" = af_xdp ] && net_u ip link set "$VETH_U" xdp off 2>/dev/null
    u_env "$KIND" memcached
    u_bg "${U_ENV[@]}" timeout -k 5 60 "$MEMCACHED" -u root -l "$IP_U" -p 11211 -U 11211 -t 2 \
        -c 1024 >"$NET_TMPD/memcached.out" 2>&1 </dev/null
    MP=$U_BG
    # shellcheck disable=SC2016
    got=$(net_k timeout 40 python3 - "$IP_U" <<'PY' 2>&1
import socket, sys, time
ip = sys.argv[1]
end = time.time() + 20
while True:
    try:
        s = socket.create_connection((ip, 11211), timeout=10)
        break
    except OSError:
        if time.time() > end:
            raise
        time.sleep(0.2)
def reply(sock, until):
    got = b""
    while not got.endswith(until):
        b = sock.recv(1 << 20)
        if not b:
            raise SystemExit("EOF after %r" % got[:80])
        got += b
    return got
big = bytes(range(256)) * 1953 + b"xy"
s.sendall(b"set big 0 0 %d\r\n" % len(big) + big + b"\r\n")
assert reply(s, b"\r\n") == b"STORED\r\n"
s.sendall(b"get big\r\n")
g = reply(s, b"END\r\n")
assert g == b"VALUE big 0 %d\r\n" % len(big) + big + b"\r\nEND\r\n", "big value differs"
s.sendall(b"set cnt 0 0 1\r\n0\r\n")
assert reply(s, b"\r\n") == b"STORED\r\n"
for i in range(300):
    c = socket.create_connection((ip, 11211), timeout=10)
    c.sendall(b"incr cnt 1\r\n")
    assert reply(c, b"\r\n") == b"%d\r\n" % (i + 1)
    c.close()
s.sendall(b"get cnt\r\n")
assert reply(s, b"END\r\n") == b"VALUE cnt 0 3\r\n300\r\nEND\r\n"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
for attempt in range(3):
    u.sendto(b"\x00\x07\x00\x00\x00\x01\x00\x00get cnt\r\n", (ip, 11211))
    try:
        d, a = u.recvfrom(2000)
        break
    except socket.timeout:
        d = b""
assert d == b"\x00\x07\x00\x00\x00\x01\x00\x00VALUE cnt 0 3\r\n300\r\nEND\r\n", d
print("ok")
PY
    ) || true
    if [ "$got" = ok ]; then
        net_log "memcached under ustack: 500,000-byte value equal, 300 incrs over 300 connections counted 300, UDP get answered"
    else
        net_softfail "memcached under ustack: $(printf '%s' "$got" | tail -n 3 | tr '\n' ' ' | head -c 300)"
    fi
    [ -n "$(u_stackds)" ] || net_softfail "memcached: no ustackd runs for it (not under ustack?)"
    proc_alive "$MP" || net_softfail "memcached under ustack exited: $(tail -n 2 "$NET_TMPD/memcached.out" | tr '\n' ' ')"
    stop_bg "$MP"
fi
net_finish
