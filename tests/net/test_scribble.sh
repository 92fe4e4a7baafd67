#!/bin/bash
# A client that corrupts its part of the shared region must not hurt ustackd or the other
# clients (docs/shm.md "Trust"). build/tests/scribble runs under LD_PRELOAD=libustack.so,
# opens 8 sockets (listeners, connects to the kernel peer), starts socat (an echo server,
# its child, on the same ustackd) and then for 12 s scribbles over its own sockets' rings,
# flags, accept queues and data and pushes garbage commands. Meanwhile the kernel side's
# loadgen verifies 50 connections x 256 KiB through socat byte-exact. Then: ustackd is alive
# and counted rejections (shm_cmd_invalid, shm_ring_insane), the scribbler is SIGKILLed (its
# corrupted sockets are reclaimed: shm_procs_reaped), socat still echoes (a second loadgen
# run), and ustackd exits with the last program. Device: af_packet. Runs in about 30 s.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init scribble 17
net_require_tools socat nc
net_require_ustackd
net_require_loadgen

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
SCRIBBLE=${SCRIBBLE:-$NET_ROOT/build/tests/scribble}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
[ -x "$SCRIBBLE" ] || net_fail "$SCRIBBLE not built (make build/tests/scribble)"
KIND=${NET_KINDS:-af_packet}
KIND=${KIND%% *}
P_ECHO=7 P_PEER=9000 SECS=12

u_stackds() {
    local p
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ustackd ] && echo "$p"
    done
    return 0
}

# A kernel peer that accepts and holds connections (the scribbler's connects go there).
net_k socat "TCP-LISTEN:$P_PEER,fork,reuseaddr" SYSTEM:'sleep 60' </dev/null >/dev/null 2>&1 &
net_bg $!

USTACKD_OUT="$NET_TMPD/stackd.log"
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift; exec env "$@"' \
    sh "${NET_BPFFS:-1}" "LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24" \
    "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT" \
    "$SCRIBBLE" "$SECS" "$IP_K" "$P_PEER" socat "TCP-LISTEN:$P_ECHO,fork,reuseaddr,backlog=128" EXEC:cat \
    </dev/null >"$NET_TMPD/scribble.out" 2>"$NET_TMPD/scribble.err" &
SCR=$!
net_bg "$SCR"
t0=$(ms_now)
up=0
for _ in $(seq 200); do
    if net_k nc -z -w 1 "$IP_U" "$P_ECHO" 2>/dev/null; then up=1; break; fi
    sleep 0.1
done
[ "$up" = 1 ] || net_fail "socat under the scribbler never listened: $(tail -n 3 "$NET_TMPD/scribble.err" | tr '\n' ' ')"
USTACKD_PID=$(u_stackds | head -n 1)
NET_USTACKD_PIDS="$USTACKD_PID"
[ -n "$USTACKD_PID" ] || net_fail "no ustackd in the ustack namespace"
SOCAT=$(pgrep -P "$SCR" -x socat | head -n 1 || true)

lg="$NET_TMPD/loadgen.1"
rc=0
net_k timeout 60 "$LOADGEN" --mode verify --server "$IP_U" --port "$P_ECHO" --conns 50 \
    --bytes $((256 * 1024)) --seconds 40 >"$lg" 2>&1 || rc=$?
[ "$rc" = 0 ] || net_softfail "loadgen verify during the scribbling exited $rc: $(grep -m 2 '^loadgen' "$lg" | tr '\n' ' ')"
[ "$(($(ms_now) - t0))" -lt $((SECS * 1000)) ] || net_log "note: loadgen ended after the scribbling did"

# The scribbler reports (after SECS) and then waits to be killed.
for _ in $(seq 300); do
    grep -q '^scribble:' "$NET_TMPD/scribble.out" 2>/dev/null && break
    sleep 0.1
done
line=$(grep '^scribble:' "$NET_TMPD/scribble.out" || true)
net_log "${line:-scribbler printed nothing}"
case $line in *alive*) ;; *) net_softfail "ustackd not alive after the scribbling: '$line' $(tail -n 2 "$NET_TMPD/scribble.err" | tr '\n' ' ')" ;; esac
proc_alive "$USTACKD_PID" || net_fail "ustackd died"
ustackd_stats st
inval=$(stat_sum "$st" shm_cmd_invalid)
insane=$(stat_sum "$st" shm_ring_insane)
net_log "ustackd: shm_cmd_invalid=$inval shm_ring_insane=$insane shm_reply_invalid=$(stat_sum "$st" shm_reply_invalid) shm_orphans=$(stat_sum "$st" shm_orphans)"
[ "$inval" -gt 100 ] || net_softfail "shm_cmd_invalid=$inval: garbage commands were not rejected and counted"
[ "$insane" -gt 0 ] || net_softfail "shm_ring_insane=0: commands on corrupted rings were not noticed"
grep -qE "ustackd: (\[[0-9]+\] )?core 0: rejected command" "$USTACKD_OUT" "$NET_TMPD/scribble.err" 2>/dev/null || net_softfail "no rejected command was logged"

# Kill the scribbler: its (corrupted) sockets are reclaimed, socat keeps serving.
kill -KILL "$SCR"
wait "$SCR" 2>/dev/null || true
for _ in $(seq 50); do
    ustackd_stats st
    [ "$(stat_sum "$st" shm_procs_reaped)" -ge 1 ] && break
    sleep 0.1
done
[ "$(stat_sum "$st" shm_procs_reaped)" -ge 1 ] || net_softfail "the killed scribbler was not reaped"
lg="$NET_TMPD/loadgen.2"
rc=0
net_k timeout 40 "$LOADGEN" --mode verify --server "$IP_U" --port "$P_ECHO" --conns 20 \
    --bytes $((256 * 1024)) --seconds 30 >"$lg" 2>&1 || rc=$?
[ "$rc" = 0 ] || net_softfail "loadgen verify after the scribbler's death exited $rc: $(grep -m 2 '^loadgen' "$lg" | tr '\n' ' ')"
proc_alive "$USTACKD_PID" || net_softfail "ustackd died after the scribbler's death"

# socat is the last client: ustackd exits after it.
[ -n "$SOCAT" ] && net__kill_pid "$SOCAT" 5
gone=0
for _ in $(seq 100); do
    [ -z "$(u_stackds)" ] && { gone=1; break; }
    sleep 0.1
done
[ "$gone" = 1 ] || net_softfail "ustackd still runs 10 s after its last program exited"
net_finish
