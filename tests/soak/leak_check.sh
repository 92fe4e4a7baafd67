#!/bin/bash
# Leak check with valgrind (memcheck, --leak-check=full, every leak kind an error):
#   1. build/soak_engine_conns: two engines on the in-memory wire through 10,000
#      request/response connections, destroyed with connections still in several states;
#   2. the engine's Check suites test_tcp and test_net (CK_FORK=no, so valgrind sees the
#      test code itself);
#   3. a preloaded client: build/soak_conn_client under LD_PRELOAD=libustack.so opens,
#      uses (8-byte echo) and closes 10,000 connections in turn to a kernel echo server
#      (bench/kserve) through ustackd (af_xdp). Only the client runs under valgrind
#      (--trace-children=no): ustackd, which libustack.so spawns, runs natively - DPDK's
#      EAL under memcheck is impractical (its memory is mmap'd hugepage-style regions
#      valgrind cannot follow, and the poll loop runs ~50x slower).
# Any valgrind error or leak fails. Part of `make soak` (tests/soak/run.sh).
# Knobs: SOAK_LEAK_CONNS (10000), SOAK_KIND (af_xdp).
# shellcheck source-path=SCRIPTDIR source=../net/lib.sh
. "$(dirname "$0")/../net/lib.sh"
net_init soak_leak 42
net_require_ustackd
net_require_tools valgrind
N=${SOAK_LEAK_CONNS:-10000}
LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
KSERVE=$NET_ROOT/build/bench/kserve CLI=$NET_ROOT/build/soak_conn_client
VG=(valgrind --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=all --error-exitcode=99)

vg_run() { # name cmd...: runs under valgrind, reports the summary lines
    local name=$1 rc=0 log="$NET_TMPD/vg.$1.log"
    shift
    "$@" >"$NET_TMPD/vg.$name.out" 2>"$log" || rc=$?
    local lost summary
    lost=$(grep -E 'definitely lost|indirectly lost|possibly lost|still reachable|All heap blocks were freed' "$log" | sed 's/^==[0-9]*== *//' | tr '\n' ';' | head -c 300)
    summary=$(grep 'ERROR SUMMARY' "$log" | tail -n 1 | sed 's/^==[0-9]*== *//')
    if [ "$rc" != 0 ]; then
        net_softfail "$name: exit $rc under valgrind: $summary $lost $(grep -v '^==' "$log" | tail -n 2 | tr '\n' ' ')"
        grep -A 12 'definitely lost in\|indirectly lost in\|possibly lost in\|still reachable in\|Invalid\|uninitialised' "$log" | head -n 40 >&2 || true
    else
        net_log "$name: $summary; ${lost:-no heap in use at exit}"
    fi
}

# 1-2: the engine, no network needed.
vg_run engine_conns "${VG[@]}" "$NET_ROOT/build/soak_engine_conns" "$N"
net_log "engine_conns: $(cat "$NET_TMPD/vg.engine_conns.out")"
for t in test_tcp test_net; do
    vg_run "$t" env CK_FORK=no "${VG[@]}" "$NET_ROOT/build/tests/$t"
done

# 3: the preloaded client against a kernel echo server.
net_k "$KSERVE" --echo 7 >"$NET_TMPD/kserve.out" 2>&1 &
net_bg $!
# shellcheck disable=SC2317
kready() { grep -q ready "$NET_TMPD/kserve.out"; }
wait_until 10 kready || net_fail "kserve did not start"
USTACKD_OUT="$NET_TMPD/stackd.log"
U_ENV=("LD_PRELOAD=$LIBUSTACK" "USTACK_DEV=$(net_dev "${SOAK_KIND:-af_xdp}")" "USTACK_IP=$IP_U/24"
    "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT" "SOAK_CLIENT_SECS=900")
# shellcheck disable=SC2016
vg_run preload_client ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
    exec env "$@"' sh "${NET_BPFFS:-1}" "${U_ENV[@]}" "${VG[@]}" --trace-children=no --child-silent-after-fork=yes "$CLI" cycle "$IP_K" 7 "$N"
net_log "preload_client: $(cat "$NET_TMPD/vg.preload_client.out")"
grep -q "^cycled $N\$" "$NET_TMPD/vg.preload_client.out" || net_softfail "the preloaded client did not complete $N connections"
# ustackd exits by itself once the client is gone.
for p in $(ip netns pids "$NS_U" 2>/dev/null); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ustackd ] && NET_USTACKD_PIDS="$NET_USTACKD_PIDS $p"
done
net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
net_finish
