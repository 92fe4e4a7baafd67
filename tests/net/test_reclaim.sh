#!/bin/bash
# Sockets of a preloaded process that dies (SIGKILL) are reclaimed by ustackd (docs/shm.md
# "Holders"). A Python program under LD_PRELOAD=libustack.so keeps ustackd alive and forks
# children that hold sockets to a kernel peer (tests/net/helpers/reclaim_*.py):
#   A - a child holding an established connection (nothing unread) and a listener is
#       SIGKILLed: the peer reads EOF within 5 s, the port stops accepting (refused), and a
#       new preloaded child can listen on it again and serve a kernel client;
#   B - a child with unread received data is SIGKILLed: the peer sees a reset within 5 s;
#   C - a child holding a connection forks; the parent is SIGKILLed: the connection stays
#       up and the grandchild echoes over it; then the grandchild exits: the peer reads EOF
#       within 5 s;
# and ustackd still exits with the last program. Counters: shm_procs_reaped and
# shm_reclaim_closes. Device: af_packet (NET_KINDS to change). Runs in about 20 s.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init reclaim 16
net_require_tools python3 nc
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=""
[ -x "$PY" ] || PY=$(command -v python3)
H="$NET_ROOT/tests/net/helpers"
KIND=${NET_KINDS:-af_packet}
KIND=${KIND%% *}
P_PEER=9000 P_LISTEN=9001
D="$NET_TMPD/sync"
mkdir -p "$D"
chmod 777 "$D"

# wait_file SECS NAME: true once $D/NAME exists.
wait_file() {
    local end=$(($(ms_now) + $1 * 1000))
    while [ ! -e "$D/$2" ]; do
        [ "$(ms_now)" -lt "$end" ] || return 1
        sleep 0.05
    done
}
# wait_line SECS REGEX: true once the peer logged a line matching REGEX.
wait_line() {
    local end=$(($(ms_now) + $1 * 1000))
    while ! grep -qE "$2" "$D/peer.log" 2>/dev/null; do
        [ "$(ms_now)" -lt "$end" ] || return 1
        sleep 0.05
    done
}
peer_log() { tr '\n' ';' <"$D/peer.log" 2>/dev/null | head -c 400; }

net_k "$PY" "$H/reclaim_peer.py" "$IP_K" "$P_PEER" "$D" 2>"$NET_TMPD/peer.err" &
net_bg $!
wait_file 10 peer.up || net_fail "kernel peer did not start: $(tail -n 2 "$NET_TMPD/peer.err")"

USTACKD_OUT="$NET_TMPD/stackd.log"
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift; exec env "$@"' \
    sh "${NET_BPFFS:-1}" "LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24" \
    "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT" \
    "$PY" "$H/reclaim_app.py" "$IP_K" "$P_PEER" "$P_LISTEN" "$D" </dev/null \
    >"$NET_TMPD/app.out" 2>"$NET_TMPD/app.err" &
APP=$!
net_bg "$APP"
apperr() { tr '\n' ' ' <"$NET_TMPD/app.err" | tail -c 300; }

# A: established connection + listener, SIGKILL.
wait_file 30 a-up || net_fail "A: the child never connected and listened: $(apperr)"
USTACKD_PID=$(u_stackds | head -n 1)
NET_USTACKD_PIDS="$USTACKD_PID"
[ -n "$USTACKD_PID" ] || net_fail "no ustackd in the ustack namespace"
wait_line 5 '^A ready' || net_softfail "A: peer never saw the connection"
net_k nc -z -w 2 "$IP_U" "$P_LISTEN" || net_softfail "A: the listener on $P_LISTEN does not accept before the kill"
touch "$D/go-kill-a"
if wait_line 5 '^A eof'; then
    net_log "A: peer read EOF $(sed -n 's/^A eof //p' "$D/peer.log") ms after the SIGKILL"
else
    net_softfail "A: the peer did not read EOF within 5 s of the SIGKILL ($(peer_log))"
fi
refused=0
for _ in $(seq 50); do
    if ! net_k nc -z -w 1 "$IP_U" "$P_LISTEN" 2>/dev/null; then refused=1; break; fi
    sleep 0.1
done
[ "$refused" = 1 ] || net_softfail "A: port $P_LISTEN still accepts after its only holder was killed"
touch "$D/go-relisten"
if wait_file 10 relisten-up; then
    got=$(net_k nc -w 3 "$IP_U" "$P_LISTEN" </dev/null 2>/dev/null || true)
    [ "$got" = hello ] || net_softfail "A: a new listener on $P_LISTEN did not serve (got '$got')"
else
    net_softfail "A: a new child could not listen on $P_LISTEN again: $(apperr)"
fi

# B: unread data, SIGKILL -> reset.
if wait_line 15 '^B (eof|rst|timeout)'; then
    grep -q '^B rst' "$D/peer.log" || net_softfail "B: the peer saw '$(grep '^B ' "$D/peer.log" | tail -n 1)', not a reset"
    net_log "B: peer saw a reset $(sed -n 's/^B rst //p' "$D/peer.log") ms after the SIGKILL"
else
    net_softfail "B: the peer saw nothing within 5 s of the SIGKILL ($(peer_log))"
fi

# C: shared across fork; the parent is killed, the grandchild still echoes; then it exits.
if wait_line 15 '^C echo'; then
    grep -q '^C echo ok' "$D/peer.log" || net_softfail "C: the surviving holder did not echo"
    grep -qE '^C (eof|rst)' "$D/peer.log" && net_softfail "C: the connection ended when one of two holders was killed"
    t0=$(ms_now)
    touch "$D/go-c-exit"
    if wait_line 5 '^C eof'; then
        net_log "C: after the kill the connection still echoed; EOF $(($(ms_now) - t0)) ms after the last holder exited"
    else
        net_softfail "C: no EOF within 5 s of the last holder's exit ($(peer_log))"
    fi
else
    net_softfail "C: no echo over the surviving holder ($(peer_log); $(apperr))"
fi

wait_file 15 done || net_softfail "the program did not finish its steps: $(apperr)"
ustackd_stats st || true
if [ -n "${st:-}" ]; then
    reaped=$(stat_sum "$st" shm_procs_reaped)
    closes=$(stat_sum "$st" shm_reclaim_closes)
    net_log "ustackd: shm_procs_reaped=$reaped shm_reclaim_closes=$closes"
    [ "${reaped:-0}" -ge 3 ] || net_softfail "shm_procs_reaped=$reaped, expected >= 3"
    [ "${closes:-0}" -ge 3 ] || net_softfail "shm_reclaim_closes=$closes, expected >= 3 (A's connection and listener, B)"
fi
touch "$D/go-exit"
wait "$APP" || net_softfail "the program exited $?: $(apperr)"
gone=0
for _ in $(seq 100); do
    [ -z "$(u_stackds)" ] && { gone=1; break; }
    sleep 0.1
done
[ "$gone" = 1 ] || net_softfail "ustackd still runs 10 s after its last program exited"
net_finish
