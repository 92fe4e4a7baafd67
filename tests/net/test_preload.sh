#!/bin/bash
# Unmodified programs under LD_PRELOAD=libustack.so against the kernel peer. The library
# spawns ustackd itself (USTACK_DEV/USTACK_IP/USTACK_CORES/USTACK_STACKD, its output to
# USTACK_STACKD_LOG) inside the ustack namespace, where the veth has no kernel address:
#   passive  - socat TCP-LISTEN:7,fork EXEC:cat under ustack; the kernel side's loadgen
#              verifies 100 connections x 256 KiB byte-exact (af_xdp and af_packet);
#   busy     - meanwhile a second, unrelated preloaded socat on the same device attaches to
#              the running ustackd (no second one stays) and echoes, and the first one still
#              echoes after it stopped (af_xdp and af_packet);
#   active   - curl under ustack downloads 20 MiB from a kernel `python3 -m http.server`
#              (sha256 equal), and curl under ustack to 127.0.0.1 reaches a kernel
#              loopback listener of the ustack namespace (hand-over to the kernel);
#   server   - `python3 -m http.server --bind 0.0.0.0` under ustack: a kernel-side curl
#              downloads 20 MiB byte-exact through ustack, and a plain curl to 127.0.0.1
#              inside the ustack namespace reaches the loopback companion listener;
#   lifetime - after each preloaded program exits (socat: SIGTERM, python: SIGKILL) its
#              ustackd is gone within 10 s (the liveness pipe); `USTACK=0` with the library
#              preloaded runs curl on kernel sockets (127.0.0.1 reached, the peer not: the
#              veth has no kernel address) without spawning ustackd;
#   restart  - a client under ustack connects to the kernel's http.server from 8 fixed ports,
#              twice, each time with a new ustackd: the second one's SYNs meet the server's
#              TIME-WAITs of the first and must be taken at once (no 1 s SYN retransmission:
#              the host's ISN key continues ISNs and timestamps across ustackd's);
#   go       - a program carrying a Go executable's build-ID note (build/tests/gonote) runs
#              on kernel sockets with one `ustack:` line saying so and no ustackd; the same
#              program without the note connects through ustack;
#   secure   - Python under ustack execs a set-user-ID file and, after seteuid, /bin/true: one
#              `ustack:` line says the loader ignores LD_PRELOAD there; a plain exec says
#              nothing. An exec that passes a ustack socket with an environment that lost
#              LD_PRELOAD (Postfix's and Dovecot's import_environment) is said once; with
#              LD_PRELOAD kept, nothing.
# The socat servers wait 5 s (-t 5, not socat's 0.5 s) after a client's half-close for
# cat's echo: a cat started with the ASan runtime preloaded (make net-san-test) may be slower.
# net-timeout: 300
# Every preloaded program is bounded (timeout, or a deadline and a kill); teardown kills
# whatever still runs in the namespaces. Runs in about 50-65 s.
# A failed check is reported (with the tail of ustackd's log) and the other checks still run.
# Knobs: NET_KINDS (devices for passive/busy, default "af_xdp af_packet"), NET_PRELOAD_KINDS
# (devices for active/server, default "af_packet af_xdp"), LIBUSTACK (default build/libustack.so),
# NET_PRELOAD_PASSIVE_SECS (bound of the passive run, default 30).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init preload 15
net_require_tools socat curl nc sha256sum cmp python3
net_require_ustackd
net_require_loadgen

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
# The interpreter itself, not a version manager's shell wrapper around it.
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=""
[ -x "$PY" ] || PY=$(command -v python3)

CONNS=100
PASSIVE_SECS=${NET_PRELOAD_PASSIVE_SECS:-30} # the bound of the passive loadgen run
CONN_BYTES=$((256 * 1024))
BIG_BYTES=$((20 * 1024 * 1024))
GONE_SECS=10        # bound for a ustackd to exit after its last program
P_ECHO=7 P_BUSY=8 P_KHTTP=8080 P_LOHTTP=8081 P_UHTTP=8000 P_SLOW=8082

WWW="$NET_TMPD/www"
mkdir -p "$WWW"
make_random "$WWW/big.bin" "$BIG_BYTES"
make_random "$WWW/small.bin" 65536
BIG_SHA=$(sha "$WWW/big.bin")

# ---------------------------------------------------------------- helpers

# u_env, u_exec, u_bg, u_stackds: tests/net/lib.sh.

# What runs in the ustack namespace, for messages: "pid comm, ...".
u_procs() {
    local p out=""
    for p in $(ip netns pids "$NS_U" 2>/dev/null); do
        out="${out:+$out, }$p $(cat "/proc/$p/comm" 2>/dev/null)"
    done
    printf '%s' "${out:-none}"
}

# Conditions for wait_for (evaluated at each try).
# shellcheck disable=SC2317
u_only_stackd() { [ "$(u_stackds | tr '\n' ' ')" = "$1 " ]; }

# u_gone KIND WHAT: after the preloaded programs exited, ustackd must be gone within
# GONE_SECS. A leftover one is reported and killed, so that the next check starts clean.
u_gone() {
    local kind=$1 what=$2 t0 left p
    t0=$(ms_now)
    wait_for "$GONE_SECS" u_no_stackd || true
    left=$(u_stackds | tr '\n' ' ')
    if [ -n "$left" ]; then
        net_softfail "$kind: ustackd (pid ${left% }) still runs $GONE_SECS s after $what exited (namespace: $(u_procs))"
        for p in $left; do net__kill_pid "$p" 3; done
    else
        net_log "$kind: ustackd gone $(($(ms_now) - t0)) ms after $what exited"
    fi
    USTACKD_PID=""
    [ "$kind" = af_xdp ] && net_u ip link set "$VETH_U" xdp off 2>/dev/null
    return 0
}

# A program's stderr for a message, on one line: its `ustack:` lines and its last line.
errtail() {
    { grep '^ustack:' "$1"; tail -n 1 "$1"; } 2>/dev/null | uniq | tr '\n' ' ' | head -c "${2:-300}"
}

# ---------------------------------------------------------------- 1 + 5: passive, busy device

check_passive() {
    local kind=$1
    local sp t0 rc lg="$NET_TMPD/loadgen.$kind.out" holder dt got
    local serr="$NET_TMPD/socat.$kind.err"
    net_flush_neigh
    u_env "$kind" "passive.$kind"
    # -t 10: after loadgen's half-close socat waits up to 10 s (not its default 0.5 s) for
    # cat to echo the rest, which a busy machine can take longer than 0.5 s to do.
    u_bg "${U_ENV[@]}" socat -t 10 "TCP-LISTEN:$P_ECHO,fork,reuseaddr,backlog=128" EXEC:cat \
        </dev/null >/dev/null 2>"$serr"
    sp=$U_BG
    t0=$SECONDS
    if ! wait_listen "$sp" "$P_ECHO"; then
        net_softfail "$kind: socat under ustack $(proc_alive "$sp" && echo "not reachable on $IP_U:$P_ECHO within 20 s" || echo "exited before listening"): $(errtail "$serr")"
        stop_bg "$sp"
        u_gone "$kind" socat
        return
    fi
    u_note_stackd
    holder=$USTACKD_PID
    net_log "$kind: socat under ustack listening after $((SECONDS - t0)) s (ustackd pid ${holder:-?})"

    t0=$SECONDS
    rc=0
    net_k timeout $((PASSIVE_SECS + 15)) "$LOADGEN" --mode verify --server "$IP_U" --port "$P_ECHO" \
        --conns "$CONNS" --bytes "$CONN_BYTES" --seconds "$PASSIVE_SECS" >"$lg" 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        net_softfail "$kind: loadgen verify $CONNS x $CONN_BYTES through socat under ustack exited $rc after $((SECONDS - t0)) s: $(grep -m 2 -E '^loadgen' "$lg" | tr '\n' ' ')"
    else
        net_log "$kind: passive: $CONNS connections x 256 KiB byte-exact in $((SECONDS - t0)) s"
    fi

    check_busy "$kind" "$holder"

    # The first stack still serves after the second program is gone.
    got=$(echo ping-after-busy | net_k timeout 10 socat -t 5 - "TCP:$IP_U:$P_ECHO,connect-timeout=5" 2>&1) || true
    [ "$got" = ping-after-busy ] \
        || net_softfail "$kind: after the second program, the first socat no longer echoes (got '$(printf '%s' "$got" | head -c 100)')"

    proc_alive "$sp" || net_softfail "$kind: socat under ustack exited during the test: $(errtail "$serr")"
    stop_bg "$sp"
    u_gone "$kind" "socat (TCP-LISTEN, fork)"
    dt=$(grep -c '^ustack:' "$serr" || true)
    [ "$dt" = 0 ] || net_log "$kind: socat said: $(grep -m 3 '^ustack:' "$serr" | tr '\n' ' ')"
}

# check_busy KIND HOLDER: a second, unrelated preloaded program on the same device while the
# first one's ustackd runs. It attaches to that ustackd (a region of its own, docs/shm.md
# "Start-up") instead of spawning: it listens and echoes, no second ustackd stays, and
# nothing is printed on its stderr. (Before attaching existed, it failed with "the device is
# in use by ustackd pid N".)
check_busy() {
    local kind=$1 holder=$2
    local berr="$NET_TMPD/busy.$kind.err" t0 bp got
    local main_log=$USTACKD_OUT main_pid=$USTACKD_PID
    u_env "$kind" "busy.$kind"
    USTACKD_OUT=$main_log USTACKD_PID=$main_pid # failures show the holder's log
    t0=$(ms_now)
    u_bg "${U_ENV[@]}" timeout -k 2 60 socat -t 5 "TCP-LISTEN:$P_BUSY,reuseaddr,fork" EXEC:cat \
        </dev/null >/dev/null 2>"$berr"
    bp=$U_BG
    if ! wait_listen "$bp" "$P_BUSY"; then
        net_softfail "$kind: a second preloaded socat on the busy device does not listen: $(errtail "$berr")"
    else
        got=$(echo ping-second | net_k timeout 10 socat -t 5 - "TCP:$IP_U:$P_BUSY,connect-timeout=5" 2>&1) || true
        if [ "$got" != ping-second ]; then
            net_softfail "$kind: the second (attached) socat does not echo (got '$(printf '%s' "$got" | head -c 100)')"
        else
            net_log "$kind: a second program attached to the running ustackd and echoes ($(($(ms_now) - t0)) ms)"
        fi
    fi
    [ -z "$holder" ] || [ "$(u_stackds | tr '\n' ' ')" = "$holder " ] \
        || net_softfail "$kind: with a second program attached, ustackds in the namespace are '$(u_stackds | tr '\n' ' ')', expected only the holder $holder"
    ! grep -q '^ustack:' "$berr" || net_softfail "$kind: the attached socat said: $(errtail "$berr")"
    stop_bg "$bp"
}

# ---------------------------------------------------------------- 2: active (curl under ustack)

check_active() {
    local kind=$1
    local out="$NET_TMPD/active.$kind.bin" cerr="$NET_TMPD/curl.$kind.err" t0 rc=0
    net_flush_neigh
    u_env "$kind" "active.$kind"
    t0=$SECONDS
    u_exec "${U_ENV[@]}" timeout -k 2 40 curl -sS --max-time 35 -o "$out" \
        "http://$IP_K:$P_KHTTP/big.bin" </dev/null 2>"$cerr" || rc=$?
    if [ "$rc" != 0 ]; then
        net_softfail "$kind: curl under ustack from the kernel's http.server exited $rc after $((SECONDS - t0)) s: $(errtail "$cerr")"
    elif [ "$(fsize "$out")" != "$BIG_BYTES" ]; then
        net_softfail "$kind: curl under ustack got $(fsize "$out") of $BIG_BYTES bytes"
    elif [ "$(sha "$out")" != "$BIG_SHA" ]; then
        net_softfail "$kind: curl under ustack got 20 MiB with a different sha256"
    else
        net_log "$kind: active: curl under ustack fetched 20 MiB from the kernel, sha256 equal, in $((SECONDS - t0)) s"
    fi
    rm -f "$out"
    u_gone "$kind" curl

    # Loopback: handed over to the kernel (the namespace's own 127.0.0.1 listener).
    u_env "$kind" "active-lo.$kind"
    rc=0
    u_exec "${U_ENV[@]}" timeout -k 2 20 curl -sS --max-time 15 -o "$out" \
        "http://127.0.0.1:$P_LOHTTP/small.bin" </dev/null 2>"$cerr" || rc=$?
    if [ "$rc" != 0 ]; then
        net_softfail "$kind: curl under ustack to the kernel loopback listener 127.0.0.1:$P_LOHTTP exited $rc: $(errtail "$cerr")"
    elif ! cmp -s "$out" "$WWW/small.bin"; then
        net_softfail "$kind: curl under ustack to 127.0.0.1 got different bytes ($(fsize "$out") of 65536)"
    else
        net_log "$kind: active: curl under ustack to 127.0.0.1 reached the kernel listener"
    fi
    rm -f "$out"
    u_gone "$kind" "curl to 127.0.0.1"
}

# ---------------------------------------------------------------- restart: a new ustackd's SYNs

# check_restart KIND: a client under ustack connects to the kernel's http.server (HTTP/1.0:
# the server closes first and keeps the TIME-WAIT) from 8 fixed local ports; once its
# ustackd has exited, a second run (a new ustackd) uses the same 8 ports at once. Each of
# its SYNs meets the server's TIME-WAIT of the same tuple, which takes a SYN only when its
# timestamp (or ISN) is newer (RFC 6191): the new ustackd continues the old one's
# timestamps and ISNs (the host's ISN key, docs/architecture.md), so every connect of the
# second run completes at once. With a random per-instance secret about half of them were
# refused and waited for the SYN retransmission, 1 s. Then curl fetches 20 times with
# `--local-port 41010-41030`, twice: it reuses its port a few hundred microseconds after the
# connection before, whose TIME-WAIT the server holds, with the same millisecond timestamp;
# with a 4 us ISN tick the new ISN could fall below that connection's last sequence number
# (a helper saw 18 of 400 connects wait 1 s). Whether a reuse lands inside that window
# depends on timing (the build with the 4 us tick passed these runs here), so test_tcp's
# isn_reused_tuple_moves_past_the_old_connection is the sharp check; these runs check the
# pattern end to end.
check_restart() {
    local kind=$1 run rc lp ports="" tw slow n i
    local -a urls=()
    for ((lp = 41000; lp < 41008; lp++)); do ports="$ports $lp"; done
    net_flush_neigh
    for run in 1 2; do
        if [ "$run" = 2 ]; then
            # shellcheck disable=SC2086 # the filter's words
            tw=$(net_k ss -Htan state time-wait "( sport = :$P_KHTTP and dport >= :41000 and dport <= :41007 )" | wc -l)
            if [ "$tw" -lt 8 ]; then
                net_softfail "$kind: restart: the kernel server holds $tw of the 8 TIME-WAITs the check needs"
                return 0
            fi
        fi
        u_env "$kind" "restart$run.$kind"
        rc=0
        # shellcheck disable=SC2086 # one argument per port
        u_exec "${U_ENV[@]}" timeout -k 2 60 "$PY" "$NET_ROOT/tests/net/helpers/port_client.py" \
            "$IP_K" "$P_KHTTP" /small.bin $ports </dev/null >"$NET_TMPD/restart$run.out" \
            2>"$NET_TMPD/restart$run.err" || rc=$?
        u_gone "$kind" "the port client (run $run)"
        if [ "$rc" != 0 ]; then
            net_softfail "$kind: restart: run $run of the port client exited $rc: $(tail -n 2 "$NET_TMPD/restart$run.out" "$NET_TMPD/restart$run.err" | tr '\n' ' ' | head -c 300)"
            return 0
        fi
    done
    slow=$(awk '$2 + 0 >= 800 { printf "%s:%s ms ", $1, $2 }' "$NET_TMPD/restart2.out")
    if [ -n "$slow" ]; then
        net_softfail "$kind: restart: connects of the second ustackd waited on the server's TIME-WAIT: $slow"
    else
        net_log "$kind: restart: a new ustackd's 8 connects on the old tuples took $(awk '{ printf "%s ", $2 }' "$NET_TMPD/restart2.out")ms"
    fi
    for ((i = 0; i < 20; i++)); do urls+=(-o /dev/null "http://$IP_K:$P_KHTTP/small.bin"); done
    for run in 3 4; do
        u_env "$kind" "restart$run.$kind"
        rc=0
        u_exec "${U_ENV[@]}" timeout -k 2 60 curl -sS --max-time 20 --local-port 41010-41030 \
            -w '%{local_port} %{time_connect} %{http_code}\n' "${urls[@]}" </dev/null \
            >"$NET_TMPD/restart$run.out" 2>"$NET_TMPD/restart$run.err" || rc=$?
        u_gone "$kind" "curl (run $run)"
        n=$(awk '$3 == 200' "$NET_TMPD/restart$run.out" | wc -l)
        # The first connect includes the new ustackd's start.
        slow=$(awk 'NR > 1 && $2 + 0 >= 0.8 { printf "#%d:%s s ", NR, $2 }' "$NET_TMPD/restart$run.out")
        if [ "$rc" != 0 ] || [ "$n" != 20 ] || [ -n "$slow" ]; then
            net_softfail "$kind: restart: curl --local-port run $((run - 2)): exit $rc, $n of 20 answered${slow:+, connects that waited on the TIME-WAIT of the one before: $slow}$(head -c 200 "$NET_TMPD/restart$run.err")"
        else
            net_log "$kind: restart: curl --local-port run $((run - 2)): 20 answered, connects after the first $(awk 'NR > 1 { printf "%.1f ", $2 * 1000 }' "$NET_TMPD/restart$run.out")ms"
        fi
    done
}

# ---------------------------------------------------------------- 3: Python server under ustack

check_server() {
    local kind=$1
    local pp out="$NET_TMPD/server.$kind.bin" cerr="$NET_TMPD/curl.$kind.err" t0 rc
    local perr="$NET_TMPD/pyserver.$kind.err"
    net_flush_neigh
    u_env "$kind" "server.$kind"
    u_bg "${U_ENV[@]}" "$PY" -m http.server --bind 0.0.0.0 --directory "$WWW" "$P_UHTTP" \
        </dev/null >/dev/null 2>"$perr"
    pp=$U_BG
    t0=$SECONDS
    if ! wait_listen "$pp" "$P_UHTTP"; then
        net_softfail "$kind: python http.server under ustack $(proc_alive "$pp" && echo "not reachable on $IP_U:$P_UHTTP within 20 s" || echo "exited before listening"): $(errtail "$perr")"
        stop_bg "$pp"
        u_gone "$kind" "python http.server"
        return
    fi
    u_note_stackd
    net_log "$kind: python http.server under ustack listening after $((SECONDS - t0)) s"

    t0=$SECONDS
    rc=0
    net_k timeout -k 2 40 curl -sS --max-time 35 -o "$out" "http://$IP_U:$P_UHTTP/big.bin" \
        </dev/null 2>"$cerr" || rc=$?
    if [ "$rc" != 0 ]; then
        net_softfail "$kind: kernel curl from python http.server under ustack exited $rc after $((SECONDS - t0)) s: $(errtail "$cerr")"
    elif [ "$(fsize "$out")" != "$BIG_BYTES" ]; then
        net_softfail "$kind: kernel curl got $(fsize "$out") of $BIG_BYTES bytes from python http.server under ustack"
    elif [ "$(sha "$out")" != "$BIG_SHA" ]; then
        net_softfail "$kind: kernel curl got 20 MiB with a different sha256 from python http.server under ustack"
    else
        net_log "$kind: server: kernel curl fetched 20 MiB through ustack, sha256 equal, in $((SECONDS - t0)) s"
    fi
    rm -f "$out"

    # The loopback companion beside the INADDR_ANY listener: a plain (kernel) curl.
    rc=0
    net_u timeout -k 2 15 curl -sS --max-time 10 -o "$out" "http://127.0.0.1:$P_UHTTP/" \
        </dev/null 2>"$cerr" || rc=$?
    if [ "$rc" != 0 ]; then
        net_softfail "$kind: curl http://127.0.0.1:$P_UHTTP/ inside the ustack namespace exited $rc: $(errtail "$cerr")"
    elif ! grep -q 'big\.bin' "$out"; then
        net_softfail "$kind: curl http://127.0.0.1:$P_UHTTP/ got no directory listing: $(head -c 100 "$out" | tr '\n' ' ')"
    else
        rc=0
        net_u timeout -k 2 15 curl -sS --max-time 10 -o "$out" "http://127.0.0.1:$P_UHTTP/small.bin" \
            </dev/null 2>"$cerr" || rc=$?
        if [ "$rc" != 0 ] || ! cmp -s "$out" "$WWW/small.bin"; then
            net_softfail "$kind: curl http://127.0.0.1:$P_UHTTP/small.bin: exit $rc, $(fsize "$out" 2>/dev/null || echo 0) bytes: $(errtail "$cerr")"
        else
            net_log "$kind: server: curl to 127.0.0.1:$P_UHTTP inside the ustack namespace works (listing, 64 KiB byte-exact)"
        fi
    fi
    rm -f "$out"

    proc_alive "$pp" || net_softfail "$kind: python http.server under ustack exited during the test: $(errtail "$perr")"
    # Killed outright: the kernel closes its end of the liveness pipe all the same.
    kill -KILL "$pp" 2>/dev/null || true
    wait "$pp" 2>/dev/null || true
    u_gone "$kind" "python http.server (SIGKILL)"
}

# ---------------------------------------------------------------- 4: USTACK=0

check_disabled() {
    local kind=$1 out="$NET_TMPD/off.bin" cerr="$NET_TMPD/curl.off.err" rc=0 marker
    # A ustackd stand-in that records being started.
    marker="$NET_TMPD/stackd-marker"
    printf '#!/bin/sh\necho started >>"%s.ran"\nexec "%s" "$@"\n' "$marker" "$USTACKD" >"$marker"
    chmod +x "$marker"
    u_env "$kind" "off"
    u_exec "${U_ENV[@]}" USTACK=0 "USTACK_STACKD=$marker" timeout -k 2 20 curl -sS --max-time 15 \
        -o "$out" "http://127.0.0.1:$P_LOHTTP/small.bin" </dev/null 2>"$cerr" || rc=$?
    if [ "$rc" != 0 ]; then
        net_softfail "USTACK=0: preloaded curl to the kernel listener 127.0.0.1:$P_LOHTTP exited $rc: $(errtail "$cerr")"
    elif ! cmp -s "$out" "$WWW/small.bin"; then
        net_softfail "USTACK=0: preloaded curl got different bytes ($(fsize "$out") of 65536)"
    fi
    # The veth has no kernel address: on kernel sockets the peer is unreachable.
    rc=0
    u_exec "${U_ENV[@]}" USTACK=0 "USTACK_STACKD=$marker" timeout -k 2 10 curl -sS --max-time 5 \
        -o "$out" "http://$IP_K:$P_KHTTP/small.bin" </dev/null 2>"$cerr.2" || rc=$?
    [ "$rc" != 0 ] || net_softfail "USTACK=0: preloaded curl reached $IP_K, which only ustack can reach from this namespace"
    if [ -e "$marker.ran" ] || [ -s "$USTACKD_OUT" ] || [ -n "$(u_stackds)" ]; then
        net_softfail "USTACK=0: ustackd was spawned ($(wc -l <"$marker.ran" 2>/dev/null || echo 0) starts; namespace: $(u_procs))"
    else
        net_log "USTACK=0: preloaded curl ran on kernel sockets (127.0.0.1 fetched, $IP_K unreachable: exit $rc), no ustackd spawned"
    fi
    rm -f "$out"
}

# ---------------------------------------------------------------- 5: a Go program

# build/tests/gonote carries a Go executable's build-ID note (tests/net/helpers/gonote.c):
# ustack must stay off in it, with one `ustack:` line and no ustackd, and its libc socket is
# the kernel's (it reaches the namespace's loopback listener). build/tests/cnote, the same
# program without the note, gets a ustack socket and reaches the peer through a ustackd.
check_go() {
    local kind=$1 marker="$NET_TMPD/go-marker" gerr="$NET_TMPD/gonote.err" out rc=0 n
    printf '#!/bin/sh\necho started >>"%s.ran"\nexec "%s" "$@"\n' "$marker" "$USTACKD" >"$marker"
    chmod +x "$marker"
    u_env "$kind" "go"
    out=$(u_exec "${U_ENV[@]}" "USTACK_STACKD=$marker" timeout -k 2 20 "$NET_ROOT/build/tests/gonote" \
        127.0.0.1 "$P_LOHTTP" </dev/null 2>"$gerr") || rc=$?
    n=$(grep -cE '^ustack: (\[[0-9]+\] )?gonote is a Go program: .*ustack is off in it' "$gerr" || true)
    if [ "$rc" != 0 ] || [ "${out#fd socket:\[}" = "$out" ] || [ "${out% connect ok}" = "$out" ]; then
        net_softfail "go: the Go-noted program's socket is not a connected kernel socket (exit $rc): $out $(errtail "$gerr")"
    elif [ "$n" != 1 ] || [ "$(wc -l <"$gerr")" != 1 ]; then
        net_softfail "go: expected exactly one 'gonote is a Go program' line on stderr, got: $(head -c 300 "$gerr" | tr '\n' ' ')"
    elif [ -e "$marker.ran" ] || [ -n "$(u_stackds)" ]; then
        net_softfail "go: ustackd was spawned for a Go program (namespace: $(u_procs))"
    else
        net_log "go: ustack off in a Go program, said once; its socket was the kernel's ($out)"
    fi
    rc=0
    out=$(u_exec "${U_ENV[@]}" "USTACK_STACKD=$marker" timeout -k 2 20 "$NET_ROOT/build/tests/cnote" \
        "$IP_K" "$P_KHTTP" </dev/null 2>"$gerr.c") || rc=$?
    if [ "$rc" != 0 ] || [ "$out" != "fd anon_inode:[eventfd] connect ok" ] || [ ! -e "$marker.ran" ] \
        || grep -q 'Go program' "$gerr.c"; then
        net_softfail "go: the program without the note did not connect through ustack (exit $rc): $out $(errtail "$gerr.c")"
    else
        net_log "go: the same program without the note connected through ustack ($out)"
    fi
    u_gone "$kind" "cnote"
}

# ---------------------------------------------------------------- rlimit: a bounded address space

# A program that bounds its address space (RLIMIT_AS: `ulimit -v`, Dovecot's
# default_vsz_limit, vsftpd's session process) maps only the region's head and the rings of
# the sockets it uses, not the whole region (2.1 GB with the default geometry; docs/shm.md
# "Mapping"). A preloaded Python holding a connection runs curl bounded to RLIM_KB twice:
# once with the region inherited (USTACK_SHM_FD), once with those variables unset, so that it
# attaches to the running ustackd for a region of its own; each fetches 20 MiB. Then, where
# ustackd may lift the bound it inherits (CAP_SYS_RESOURCE, which root has outside this kind
# of sandbox), a bounded curl spawns ustackd itself.
RLIM_KB=400000
check_rlimit_as() {
    local kind=$1 out="$NET_TMPD/rlimit.bin" cerr="$NET_TMPD/rlimit.err" rc=0 url how
    url="http://$IP_K:$P_KHTTP/big.bin"
    if [ -n "${NET_SAN_RT:-}" ]; then
        # make net-san-test: ASan's runtime, preloaded into curl, reserves terabytes of
        # shadow address space and cannot start under any RLIMIT_AS (curl exits 250).
        net_log "rlimit: not run with the sanitizer runtime (ASan cannot start under RLIMIT_AS); make test runs it"
        return
    fi
    for how in inherited attached; do
        rc=0
        u_env "$kind" "rlimit-$how"
        u_exec "${U_ENV[@]}" timeout -k 2 40 "$PY" -c '
import socket, subprocess, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
unset = "unset USTACK_SHM_FD USTACK_PIPE_FD; " if sys.argv[3] == "attached" else ""
sh = unset + "echo \"region fd ${USTACK_SHM_FD:-none}\" >&2; ulimit -v \"$1\" && exec curl -sS --max-time 30 -o \"$2\" \"$3\""
sys.exit(subprocess.call(["bash", "-c", sh, "_"] + sys.argv[4:]))
' "$IP_K" "$P_KHTTP" "$how" "$RLIM_KB" "$out" "$url" </dev/null 2>"$cerr" || rc=$?
        if [ "$rc" != 0 ] || [ "$(sha "$out")" != "$BIG_SHA" ]; then
            net_softfail "rlimit: a curl bounded to $RLIM_KB KiB ($how region) exited $rc, $(fsize "$out") bytes: $(errtail "$cerr")"
        elif { [ $how = inherited ] && grep -q 'region fd none' "$cerr"; } \
            || { [ $how = attached ] && ! grep -q 'region fd none' "$cerr"; }; then
            net_softfail "rlimit: the $how curl saw $(head -1 "$cerr")"
        else
            net_log "rlimit: a curl bounded to $RLIM_KB KiB ($how region, $(head -1 "$cerr")) fetched 20 MiB, sha256 equal"
        fi
        rm -f "$out"
        u_gone "$kind" "python and its bounded curl"
    done
    # CapEff's bit 24: CAP_SYS_RESOURCE.
    if ! (( 0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24 & 1 )); then
        net_log "rlimit: a bounded curl spawning ustackd not run: no CAP_SYS_RESOURCE here, ustackd cannot lift the bound"
        return
    fi
    rc=0
    u_env "$kind" "rlimit-spawn"
    u_exec "${U_ENV[@]}" timeout -k 2 40 bash -c 'ulimit -v "$1" && exec curl -sS --max-time 35 -o "$2" "$3"' \
        _ "$RLIM_KB" "$out" "$url" </dev/null 2>"$cerr" || rc=$?
    if [ "$rc" != 0 ] || [ "$(sha "$out")" != "$BIG_SHA" ]; then
        net_softfail "rlimit: a curl bounded to $RLIM_KB KiB spawning ustackd exited $rc, $(fsize "$out") bytes: $(errtail "$cerr")"
    else
        net_log "rlimit: a curl bounded to $RLIM_KB KiB spawned ustackd and fetched 20 MiB, sha256 equal"
    fi
    rm -f "$out"
    u_gone "$kind" "bounded curl"
}

# ---------------------------------------------------------------- exit: what an exited program wrote

# A program under ustack writes EXIT_BYTES to a kernel reader slower than it (4 KiB every
# 40 ms, about 100 KB/s), closes and exits at once. As on the kernel, every byte must
# arrive, then the FIN: the region's teardown hands what the tx ring still holds to the
# engine, and the spawned ustackd waits for its connections to deliver (docs/shm.md
# "Start-up, inheritance, exit"). Before, the reader got a clean end of the stream with
# the ring's last ~60 KB missing, or (ustackd gone a second after the program) waited for
# ever at about 770 KB of 1 MB.
EXIT_BYTES=600000
check_exit_delivers() {
    local kind=$1 out="$NET_TMPD/exit.out" err="$NET_TMPD/exit.err" rc=0 want
    want=$(head -c "$EXIT_BYTES" /dev/zero | tr '\0' 'x' | sha256sum | cut -d' ' -f1)
    ip netns exec "$NS_K" timeout -k 2 40 "$PY" "$NET_ROOT/tests/net/helpers/slow_reader.py" \
        "$IP_K" "$P_SLOW" 4096 40 30 >"$out" 2>&1 &
    local rpid=$!
    wait_for 10 net_k sh -c "ss -Hltn 'sport = :$P_SLOW' | grep -q ." || true
    u_env "$kind" "exit"
    u_exec "${U_ENV[@]}" timeout -k 2 30 "$PY" -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(b"x" * int(sys.argv[3]))
s.close()
' "$IP_K" "$P_SLOW" "$EXIT_BYTES" </dev/null 2>"$err" || rc=$?
    wait "$rpid" || true
    if [ "$rc" != 0 ]; then
        net_softfail "exit: the writer under ustack exited $rc: $(errtail "$err")"
    elif [ "$(head -1 "$out" | cut -d' ' -f1-2)" != "eof $EXIT_BYTES" ] || [ "$(sed -n 2p "$out")" != "$want" ]; then
        net_softfail "exit: the slow reader got $(head -1 "$out" | tr '\n' ' ')(want eof $EXIT_BYTES, sha256 equal)"
    else
        net_log "exit: a program that wrote $EXIT_BYTES bytes and exited had them all delivered to a slow reader, then its FIN ($(head -1 "$out"))"
    fi
    u_gone "$kind" "the writer that exited"
}

# ---------------------------------------------------------------- 6: secure exec

# An exec the kernel runs with changed privileges ignores LD_PRELOAD: the program that makes
# it says so once (Squid's master re-executes its worker that way), and a plain exec says
# nothing. Python under ustack execs /bin/true three ways.
check_secure_exec() {
    local kind=$1 err="$NET_TMPD/secure.err" f="$NET_TMPD/suid_true" rc=0 i
    if ! { cp /bin/true "$f" && chown nobody "$f" && chmod u+s "$f"; }; then
        net_fail "cannot make $f set-user-ID"
    fi
    u_env "$kind" "secure"
    local -a progs=(
        'import os; os.execv("/bin/true", ["true"])'
        "import os; os.execv(\"$f\", [\"t\"])"
        'import os; os.setegid(65534); os.seteuid(65534); os.execv("/bin/true", ["true"])'
    )
    local -a want=('' 'a set-user-ID or set-group-ID file' 'effective IDs differ from the real ones')
    for i in 0 1 2; do
        rc=0
        u_exec "${U_ENV[@]}" timeout -k 2 20 "$PY" -c "${progs[$i]}" </dev/null 2>"$err.$i" || rc=$?
        if [ "$rc" != 0 ]; then
            net_softfail "secure exec $i: exit $rc: $(errtail "$err.$i")"
        elif [ -z "${want[$i]}" ] && grep -q 'changes privileges' "$err.$i"; then
            net_softfail "secure exec: a plain exec was reported: $(head -c 300 "$err.$i")"
        elif [ -n "${want[$i]}" ] && [ "$(grep -cE "^ustack: (\[[0-9]+\] )?exec of .* changes privileges \(${want[$i]}\)" "$err.$i")" != 1 ]; then
            net_softfail "secure exec $i: expected one line saying '${want[$i]}', got: $(head -c 300 "$err.$i" | tr '\n' ' ')"
        fi
    done
    net_log "secure exec: said once for a set-user-ID file and for changed effective IDs, not for a plain exec"
}

# An exec that passes a ustack socket to an image that will not load the library (its
# environment lost LD_PRELOAD, as Postfix's master and Dovecot's rebuild their children's):
# said once; the same exec with LD_PRELOAD kept says nothing.
check_unpreloaded_exec() {
    local kind=$1 err="$NET_TMPD/nopreload.err" rc=0 i
    u_env "$kind" "nopreload"
    local -a progs=(
        'import os, socket; s = socket.socket(); s.set_inheritable(True); os.execve("/bin/true", ["true"], {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})'
        'import os, socket; s = socket.socket(); s.set_inheritable(True); os.execv("/bin/true", ["true"])'
    )
    local -a want=(1 0)
    for i in 0 1; do
        rc=0
        u_exec "${U_ENV[@]}" timeout -k 2 20 "$PY" -c "${progs[$i]}" </dev/null 2>"$err.$i" || rc=$?
        if [ "$rc" != 0 ]; then
            net_softfail "exec without LD_PRELOAD $i: exit $rc: $(errtail "$err.$i")"
        elif [ "$(grep -cE "^ustack: (\[[0-9]+\] )?exec of /bin/true without .* in its LD_PRELOAD" "$err.$i")" != "${want[$i]}" ]; then
            net_softfail "exec without LD_PRELOAD $i: expected ${want[$i]} line(s), got: $(head -c 300 "$err.$i" | tr '\n' ' ')"
        fi
    done
    net_log "exec passing a socket: said once without LD_PRELOAD in the new environment, not with it"
}

# ---------------------------------------------------------------- run

# Kernel side: the HTTP server curl under ustack fetches from.
ip netns exec "$NS_K" "$PY" -m http.server --bind "$IP_K" --directory "$WWW" "$P_KHTTP" \
    </dev/null >/dev/null 2>"$NET_TMPD/khttp.err" &
net_bg $!
# The ustack namespace's own kernel loopback listener (not preloaded).
ip netns exec "$NS_U" "$PY" -m http.server --bind 127.0.0.1 --directory "$WWW" "$P_LOHTTP" \
    </dev/null >/dev/null 2>"$NET_TMPD/lohttp.err" &
net_bg $!
wait_for 10 net_k nc -z -w 1 "$IP_K" "$P_KHTTP" \
    || net_fail "the kernel's python http.server on $IP_K:$P_KHTTP did not start: $(errtail "$NET_TMPD/khttp.err")"
wait_for 10 net_u nc -z -w 1 127.0.0.1 "$P_LOHTTP" \
    || net_fail "the loopback python http.server on 127.0.0.1:$P_LOHTTP did not start: $(errtail "$NET_TMPD/lohttp.err")"

for kind in ${NET_KINDS:-af_xdp af_packet}; do
    check_passive "$kind"
done
for kind in ${NET_PRELOAD_KINDS:-af_packet af_xdp}; do
    check_active "$kind"
    check_server "$kind"
done
check_restart af_xdp
check_disabled af_packet
check_go af_packet
check_rlimit_as af_packet
check_exit_delivers af_xdp
check_secure_exec af_packet
check_unpreloaded_exec af_packet
net_finish
