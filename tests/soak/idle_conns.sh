#!/bin/bash
# Idle-connection soak: a small epoll echo server (tests/soak/echo_server.c) under
# LD_PRELOAD=libustack.so holds as many connections as its open-file limit allows (20,000
# here, not raisable), opened by kernel-side clients (tests/soak/conn_client.c) in several
# processes from several source addresses in 198.18.0.0/15. All are held idle, then every
# one sends 8 bytes and must get them back on the same connection.
# Memory is read from /proc/<pid>/smaps_rollup for ustackd and for the server: before any
# connection, with all of them idle, and after all were used; the script prints the growth
# per connection (Rss, Pss, anonymous and shared-memory parts; the shared region is a memfd
# both map, so its touched pages show as Rss_Shmem in both and are split in Pss_Shmem).
# Fails if a client cannot connect or gets no (or a wrong) echo, or if the server ends with
# fewer connections than asked. Knobs: SOAK_IDLE_CLIENTS (processes, 4), SOAK_IDLE_PER
# (connections per client, 4990), SOAK_KIND (af_xdp), SOAK_IDLE_ENV (extra USTACK_*=v
# words for the server, e.g. "USTACK_RCVBUF=16K"). Part of `make soak`.
# shellcheck source-path=SCRIPTDIR source=../net/lib.sh
. "$(dirname "$0")/../net/lib.sh"
net_init soak_idle 41
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
SRV=$NET_ROOT/build/soak_echo_server CLI=$NET_ROOT/build/soak_conn_client
for b in "$LIBUSTACK" "$SRV" "$CLI"; do [ -x "$b" ] || [ -r "$b" ] || net_fail "$b not built (make soak)"; done
KIND=${SOAK_KIND:-af_xdp}
NCLI=${SOAK_IDLE_CLIENTS:-4} PER=${SOAK_IDLE_PER:-4990}
TOTAL=$((NCLI * PER))
PORT=7

# Source addresses for the clients: .11, .12, ... on the kernel's veth.
SRCS=()
base=${IP_K%.*}
for ((i = 0; i < NCLI; i++)); do
    SRCS+=("$base.$((11 + i))")
    net_k ip addr add "$base.$((11 + i))/24" dev "$VETH_K"
done

u_comm_pids() {
    local p
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && echo "$p"
    done
    return 0
}
# mem PID: "Rss Pss Pss_Anon Pss_Shmem Rss_Shmem" in KiB from smaps_rollup.
mem() {
    awk '/^Rss:/ {r=$2} /^Pss:/ {p=$2} /^Pss_Anon:/ {pa=$2} /^Pss_Shmem:/ {ps=$2}
         /^Shared_Clean:|^Shared_Dirty:|^Private_Dirty:|^Private_Clean:/ {}
         END {print r+0, p+0, pa+0, ps+0}' "/proc/$1/smaps_rollup"
}
shmem_rss() { awk '/^RssShmem:/ {print $2}' "/proc/$1/status"; }
show() { # label pid
    local m
    read -r -a m <<<"$(mem "$2")"
    echo "${m[0]} ${m[1]} ${m[2]} ${m[3]} $(shmem_rss "$2")"
}

USTACKD_OUT="$NET_TMPD/stackd.log"
U_ENV=("LD_PRELOAD=$LIBUSTACK" "USTACK_DEV=$(net_dev "$KIND")" "USTACK_IP=$IP_U/24"
    "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT"
    "USTACK_SHM_SOCKS=32768")
# shellcheck disable=SC2206
[ -n "${SOAK_IDLE_ENV:-}" ] && U_ENV+=($SOAK_IDLE_ENV)
# shellcheck disable=SC2016
ip netns exec "$NS_U" sh -c '[ "$1" = 1 ] && mount -t bpf bpf /sys/fs/bpf 2>/dev/null; shift
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec env "$@"' sh "${NET_BPFFS:-1}" \
    "${U_ENV[@]}" "$SRV" "$PORT" >"$NET_TMPD/srv.out" 2>"$NET_TMPD/srv.err" </dev/null &
SRV_PID=$!
net_bg "$SRV_PID"
# shellcheck disable=SC2317
srv_ready() { grep -q listening "$NET_TMPD/srv.out" 2>/dev/null || ! proc_alive "$SRV_PID"; }
wait_until 30 srv_ready
proc_alive "$SRV_PID" || net_fail "echo_server exited: $(tail -n 3 "$NET_TMPD/srv.err" | tr '\n' ' ')"
USTACKD_PID=$(u_comm_pids ustackd | head -n 1)
NET_USTACKD_PIDS="$USTACKD_PID"
[ -n "$USTACKD_PID" ] || net_fail "no ustackd in the server's namespace"
# One connection first, so ARP and the first-use allocations are behind us.
net_k timeout 10 "$CLI" cycle "$IP_U" "$PORT" 1 >/dev/null 2>"$NET_TMPD/warm.err" ||
    net_fail "a first echo through the server failed: $(cat "$NET_TMPD/warm.err")"
sleep 1
M0_D=$(show d "$USTACKD_PID") M0_S=$(show s "$SRV_PID")
net_log "before: ustackd Rss/Pss/PssAnon/PssShmem/RssShmem KiB $M0_D; server $M0_S"

t0=$SECONDS
CPIDS=()
for ((i = 0; i < NCLI; i++)); do
    mkfifo "$NET_TMPD/go.$i"
    # shellcheck disable=SC2016
    net_k sh -c 'ulimit -n 20000; exec "$@"' sh env SOAK_CLIENT_SECS=240 \
        "$CLI" hold "$IP_U" "$PORT" "$PER" "${SRCS[$i]}" <"$NET_TMPD/go.$i" \
        >"$NET_TMPD/cli.$i.out" 2>"$NET_TMPD/cli.$i.err" &
    CPIDS+=($!)
    net_bg "$!"
    exec {fd}>"$NET_TMPD/go.$i"
    eval "GO_FD_$i=$fd"
done
# shellcheck disable=SC2317
all_line() { # all clients printed $1, or one died
    local i
    for ((i = 0; i < NCLI; i++)); do
        grep -q "^$1 " "$NET_TMPD/cli.$i.out" 2>/dev/null || { proc_alive "${CPIDS[$i]}" || return 0; return 1; }
    done
}
wait_until 300 all_line held || true
held=0
for ((i = 0; i < NCLI; i++)); do
    n=$(sed -n 's/^held \([0-9]*\)/\1/p' "$NET_TMPD/cli.$i.out")
    [ "${n:-0}" = "$PER" ] || net_fail "client $i (${SRCS[$i]}) held '${n:-0}' of $PER: $(tail -n 2 "$NET_TMPD/cli.$i.err" | tr '\n' ' ')"
    held=$((held + n))
done
net_log "$held connections held after $((SECONDS - t0)) s"
sleep 3
kill -USR1 "$SRV_PID"
sleep 0.5
M1_D=$(show d "$USTACKD_PID") M1_S=$(show s "$SRV_PID")
net_log "idle: ustackd $M1_D; server $M1_S; $(tail -n 1 "$NET_TMPD/srv.err")"

t0=$SECONDS
for ((i = 0; i < NCLI; i++)); do
    fdv="GO_FD_$i"
    echo go >&"${!fdv}"
done
wait_until 120 all_line used || true
for ((i = 0; i < NCLI; i++)); do
    n=$(sed -n 's/^used \([0-9]*\)/\1/p' "$NET_TMPD/cli.$i.out")
    [ "${n:-0}" = "$PER" ] || net_softfail "client $i: '${n:-0}' of $PER connections answered: $(tail -n 2 "$NET_TMPD/cli.$i.err" | tr '\n' ' ')"
done
M2_D=$(show d "$USTACKD_PID") M2_S=$(show s "$SRV_PID")
net_log "all $TOTAL used in $((SECONDS - t0)) s: ustackd $M2_D; server $M2_S"

per_conn() { # label before after
    local -a a b
    read -r -a a <<<"$2"
    read -r -a b <<<"$3"
    awk -v l="$1" -v n="$TOTAL" -v r0="${a[0]}" -v r1="${b[0]}" -v p0="${a[1]}" -v p1="${b[1]}" \
        -v pa0="${a[2]}" -v pa1="${b[2]}" -v ps0="${a[3]}" -v ps1="${b[3]}" -v s0="${a[4]}" -v s1="${b[4]}" \
        'BEGIN { printf "%s per connection: Rss %.0f B, Pss %.0f B (anon %.0f B, shmem %.0f B), RssShmem %.0f B\n",
                 l, (r1-r0)*1024/n, (p1-p0)*1024/n, (pa1-pa0)*1024/n, (ps1-ps0)*1024/n, (s1-s0)*1024/n }'
}
net_log "$(per_conn "ustackd idle" "$M0_D" "$M1_D")"
net_log "$(per_conn "server idle " "$M0_S" "$M1_S")"
net_log "$(per_conn "ustackd used" "$M0_D" "$M2_D")"
net_log "$(per_conn "server used " "$M0_S" "$M2_S")"
for ((i = 0; i < NCLI; i++)); do
    fdv="GO_FD_$i"
    echo close >&"${!fdv}"
done
for p in "${CPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
proc_alive "$SRV_PID" || net_softfail "echo_server exited"
proc_alive "$USTACKD_PID" || net_softfail "ustackd exited"
kill -TERM "$SRV_PID" 2>/dev/null || true
# shellcheck disable=SC2317
stackd_gone() { ! proc_alive "$USTACKD_PID"; }
if wait_until 15 stackd_gone; then USTACKD_PID=""; else net_softfail "ustackd still runs 15 s after the server exited"; fi
[ "$KIND" = af_xdp ] && { net_u ip link set "$VETH_U" xdp off 2>/dev/null || true; }
net_finish
