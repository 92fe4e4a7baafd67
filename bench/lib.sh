# shellcheck shell=bash
# bench/lib.sh - set-up shared by the benchmark scripts (sourced, bash, root).
#
# The benchmark topology is the one tests/net/lib.sh builds for the tests: two network
# namespaces joined by one veth pair, created inside the namespaces so its names never
# collide, offloads and IPv6 off, addresses in 198.18.0.0/15 only (a blackhole route in
# the root namespace catches anything that leaks). The helpers here are plain functions
# without traps or exits: the caller owns clean-up (bench_ns_teardown in its EXIT trap).

# bench_alive PID: the process exists and is not a zombie.
bench_alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) [ZX] ' "/proc/$1/stat" 2>/dev/null; }

# bench_wait_line PID FILE PATTERN: wait up to 30 s for a line matching PATTERN (grep) in
# FILE while PID lives. Status 0 when it came, 1 when PID exited or the time ran out.
bench_wait_line() {
    local pid=$1 file=$2 pat=$3 i
    for ((i = 0; i < 300; i++)); do
        grep -q "$pat" "$file" 2>/dev/null && return 0
        bench_alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

# bench_comm PID: the process's comm (empty when it is gone).
bench_comm() { cat "/proc/$1/comm" 2>/dev/null; }

# bench_kill_bounded PID SIG SECS: send SIG, wait up to SECS for the process to go, then
# SIGKILL. Status 1 when SIGKILL was needed.
bench_kill_bounded() {
    local pid=$1 sig=$2 secs=$3 i
    bench_alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        bench_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    return 1
}

# bench_ns_pids NS COMM: the pids in namespace NS whose comm is COMM.
bench_ns_pids() {
    local p
    for p in $(ip netns pids "$1" 2>/dev/null); do
        [ "$(bench_comm "$p")" = "$2" ] && echo "$p"
    done
    return 0
}

# bench_topology NS_A NS_B VETH_A VETH_B: both namespaces and the veth pair between them,
# links up, no addresses. Offloads (checksum, GSO, GRO, TSO) off on both ends, so the kernel
# and ustack both see MTU-sized frames; the whole local port range for the client side.
bench_topology() {
    local a=$1 b=$2 va=$3 vb=$4 ns
    ip route show type blackhole 2>/dev/null | grep -q '198\.18\.0\.0/15' ||
        ip route add blackhole 198.18.0.0/15 2>/dev/null
    ip netns add "$a" || return 1
    ip netns add "$b" || return 1
    ip -n "$a" link add "$va" type veth peer name "$vb" netns "$b" || return 1
    for ns in "$a" "$b"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" >/dev/null 2>&1
        ip -n "$ns" link set lo up
    done
    ip netns exec "$a" ethtool -K "$va" tx off rx off gso off gro off tso off >/dev/null 2>&1
    ip netns exec "$b" ethtool -K "$vb" tx off rx off gso off gro off tso off >/dev/null 2>&1
    ip -n "$a" link set "$va" up && ip -n "$b" link set "$vb" up
}

# bench_server_pair PROG: the set-up of the one-server scripts (reflect.sh, wake.sh) from
# their globals NS_C NS_S V_C V_S IP_C: TMP (a new directory), an EXIT trap that stops
# SRV_PID and removes the namespaces and TMP, the topology and the client's address /24.
# Status 1 (one line on stderr) when the topology fails.
bench_server_pair() {
    SRV_PID=""
    TMP=$(mktemp -d "/tmp/$1.XXXXXX") || return 1
    trap bench__server_pair_end EXIT
    trap 'exit 1' INT TERM
    bench_topology "$NS_C" "$NS_S" "$V_C" "$V_S" && ip -n "$NS_C" addr add "$IP_C/24" dev "$V_C" &&
        return 0
    echo "$1.sh: topology failed" >&2
    return 1
}

# shellcheck disable=SC2317  # called by the EXIT trap
bench__server_pair_end() {
    bench_server_stop
    bench_ns_teardown "$NS_C" "$NS_S"
    rm -rf "$TMP"
}

# bench_server_stop: stops SRV_PID (SIGTERM, SIGKILL after 10 s) and takes any XDP program
# off V_S.
bench_server_stop() {
    [ -n "$SRV_PID" ] && bench_kill_bounded "$SRV_PID" TERM 10
    SRV_PID=""
    ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
    return 0
}

# bench_ns_teardown NS...: SIGTERM to every process still in the namespaces (all started by
# the caller), SIGKILL after 5 s, then delete them.
bench_ns_teardown() {
    local ns p
    for ns in "$@"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    done
    for ns in "$@"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do bench_kill_bounded "$p" TERM 5; done
    done
    for ns in "$@"; do ip netns del "$ns" 2>/dev/null; done
    return 0
}

# bench_ngx_prefix NGINX DIR TEMPLATE INDEX: a private nginx prefix in DIR (www/, tmp/, logs)
# with the configuration from TEMPLATE (bench/nginx/nginx.conf.in, `daemon off;`) and
# INDEX as www/index.html. Sets NGX_ARGS (-p, -c, and -e where nginx has it). The worker
# runs as nobody, so everything is made readable.
bench_ngx_prefix() {
    local nginx=$1 prefix=$2 template=$3 index=$4 group v m temp=""
    mkdir -p "$prefix/www" "$prefix/tmp" || return 1
    cp "$index" "$prefix/www/index.html" || return 1
    group=$(getent group nogroup >/dev/null && echo nogroup || echo nobody)
    v=$("$nginx" -V 2>&1)
    for m in client_body proxy fastcgi uwsgi scgi; do
        if [ "$m" != client_body ] && grep -q -- "--without-http_${m}_module" <<<"$v"; then continue; fi
        temp="$temp    ${m}_temp_path $prefix/tmp/$m;\n"
    done
    sed -e "s|@USER@|nobody|; s|@GROUP@|$group|; s|@DAEMON@|off|; s|@PREFIX@|$prefix|g" \
        -e "s|@TEMP_PATHS@|$temp|" "$template" >"$prefix/nginx.conf" || return 1
    chmod -R a+rX "$prefix"
    NGX_ARGS=(-p "$prefix" -c "$prefix/nginx.conf")
    if "$nginx" -h 2>&1 | grep -q -- '^ *-e '; then NGX_ARGS+=(-e "$prefix/error.log"); fi
    "$nginx" -t "${NGX_ARGS[@]}" >/dev/null 2>&1
}

# bench_cpus COUNT: USTACK_CORES for COUNT stack cores on this machine: 1 -> CPU 1 (CPU 0
# when there is only one), N -> CPUs 0..N-1. Empty when the machine has fewer CPUs.
bench_cpus() {
    local n=$1 have
    have=$(nproc)
    if [ "$n" = 1 ]; then
        if [ "$have" -gt 1 ]; then echo 1; else echo 0; fi
    elif [ "$n" -le "$have" ]; then
        echo "0-$((n - 1))"
    fi
}
