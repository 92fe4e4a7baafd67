#!/bin/bash
# net-timeout: 120
# A listener whose program is slow to accept, under LD_PRELOAD=libustack.so: the shared
# accept queue (USTACK_SHM_RING=4096: 512 entries) fills, and the connections beyond it must
# wait in the engine's queue, established, until the program takes them (docs/shm.md
# "Accepting"), never be reset. The kernel side opens 700 connections at once, all
# complete their handshakes, then the program accepts and answers every one: 700 "ok",
# no reset; ustackd counts shm_aq_full > 0 and no shm_aq_overflow.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init backlog 17
net_require_tools python3
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
PY=$(command -v python3)
H="$NET_ROOT/tests/net/helpers"
KIND=${NET_KINDS:-af_xdp}
KIND=${KIND%% *}
PORT=8080 N=700
D="$NET_TMPD/sync"
mkdir -p "$D"
chmod 777 "$D"

USTACKD_OUT="$NET_TMPD/stackd.log"
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift; exec env "$@"' \
    sh "${NET_BPFFS:-1}" "LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24" \
    "USTACK_CORES=0" "USTACK_SHM_RING=4096" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT" \
    "$PY" "$H/backlog_server.py" "$PORT" "$N" "$D" </dev/null \
    >"$NET_TMPD/server.out" 2>"$NET_TMPD/server.err" &
SRV=$!
net_bg "$SRV"
for _ in $(seq 300); do
    [ -e "$D/up" ] && break
    sleep 0.1
done
[ -e "$D/up" ] || net_fail "the server under ustack did not start: $(tail -c 300 "$NET_TMPD/server.err")"
for p in $(ip netns pids "$NS_U" 2>/dev/null); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ustackd ] && USTACKD_PID=$p
done
[ -n "${USTACKD_PID:-}" ] || net_fail "no ustackd in the ustack namespace"
NET_USTACKD_PIDS="$USTACKD_PID"

res=$(net_k timeout -k 2 90 "$PY" "$H/backlog_client.py" "$IP_U" "$PORT" "$N" "$D" 2>"$NET_TMPD/client.err")
net_log "client: $(tr '\n' ' ' <"$NET_TMPD/client.err")$res"
case "$res" in
"ok=$N reset=0 other=0 unanswered=0") ;;
*) net_softfail "expected ok=$N and nothing else, got '$res'" ;;
esac
for _ in $(seq 100); do
    [ -s "$NET_TMPD/server.out" ] && break
    sleep 0.1
done
served=$(cat "$NET_TMPD/server.out")
[ "$served" = "$N" ] || net_softfail "the server served '$served' of $N"
ustackd_stats st || true
if [ -n "${st:-}" ]; then
    full=$(stat_sum "$st" shm_aq_full)
    over=$(stat_sum "$st" shm_aq_overflow)
    net_log "ustackd: shm_aq_full=$full shm_aq_overflow=$over"
    [ "${full:-0}" -gt 0 ] || net_softfail "shm_aq_full=$full: the shared accept queue never filled, the test proves nothing"
    [ "${over:-0}" = 0 ] || net_softfail "shm_aq_overflow=$over: connections were reset"
fi
touch "$D/exit"
wait "$SRV" || net_softfail "the server exited $?: $(tail -c 300 "$NET_TMPD/server.err")"
net_finish
