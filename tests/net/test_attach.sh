#!/usr/bin/env bash
# test_attach.sh - one ustackd, several independent client process trees (docs/shm.md
# "Start-up"): a process with no inherited region attaches to the ustackd serving its device
# (a region of its own), or spawns one.
#   parallel   - `sh -c 'curl & curl & curl & wait'` under ustack: three unrelated curls
#                download 4 MiB each from a kernel `python3 -m http.server` at once, all
#                byte-exact, through one ustackd (one "ready" in the shared ustackd log; the
#                losers of the spawn race attach), which exits after the last curl;
#   in a row   - after a program that left data for a peer that never reads, four curls
#                under ustack one after another: the first attaches to the ustackd that
#                stays for that connection, the second (another USTACK_IP) makes it stop and
#                its own ustackd waits for the device, the third and fourth attach to the
#                second's idle ustackd; all byte-exact;
#   standalone - `ustackd --standalone` started by hand; two unrelated preloaded socat echo
#                servers (ports 7 and 8) and a preloaded curl work through it at once; the
#                two servers' regions are different memfds (inodes differ); killing one
#                (SIGKILL) leaves the other echoing; /ustack/regions (telemetry) lists
#                both regions with the servers' pids; a client with another USTACK_IP is
#                refused with one `ustack:` line naming the ustackd, and USTACK_ATTACH
#                naming no socket fails instead of spawning (the second server attaches
#                through USTACK_ATTACH); ustackd keeps running with no client and stops on
#                SIGTERM (status 0);
#   spawned    - a spawned ustackd serves a second, unrelated socat (no second ustackd), stays
#                while that one runs after the spawner's socat exited, and exits once the last
#                one did;
#   reuseport  - two unrelated socat servers (two regions) listen on one port with
#                SO_REUSEPORT: both answer some of 40 connections, none fails, a third server
#                without the option gets EADDRINUSE, and after one is killed the other
#                answers every connection.
# Every program is bounded (timeout or a kill); teardown kills what still runs in the
# namespaces. Runs in about 50 s on an idle machine, up to 2 min when it is busy.
# Knobs: NET_KINDS (default "af_packet"), LIBUSTACK (default build/libustack.so).
# net-timeout: 300
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init attach 19
net_require_tools socat curl nc sha256sum python3
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=""
[ -x "$PY" ] || PY=$(command -v python3)

GONE_SECS=10
P_A=7 P_B=8 P_KHTTP=8080 P_SINK=9 P_R=10
WWW="$NET_TMPD/www"
mkdir -p "$WWW"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$WWW/f.bin"
F_SHA=$(sha256sum "$WWW/f.bin" | cut -d' ' -f1)

U_ENV=()
u_env() {
    USTACKD_OUT="$NET_TMPD/stackd.$2.log"
    U_ENV=("LD_PRELOAD=${NET_SAN_RT:+$NET_SAN_RT:}$LIBUSTACK" "USTACK_DEV=$(net_dev "$1")" "USTACK_IP=$IP_U/24"
        "USTACK_CORES=0" "USTACK_STACKD=$USTACKD" "USTACK_STACKD_LOG=$USTACKD_OUT"
        "USTACK_LOG=info")
    [ -n "${NET_USTACK_EAL:-}" ] && U_ENV+=("USTACK_EAL=$NET_USTACK_EAL")
    return 0
}
# U_SH, u_exec, u_bg, u_stackds: tests/net/lib.sh.
# The servers are `socat -t 5 TCP-LISTEN:...,fork EXEC:cat`: after the client's half-close
# each child waits up to 5 s (not socat's default 0.5 s) for cat's echo, since a cat that
# starts slowly (the ASan runtime preloaded into it, a loaded machine) would otherwise close
# the connection before echoing (tests/net/README.md "Sanitizer builds").
echo_ok() { # echo_ok PORT WORD
    local got
    got=$(echo "$2" | net_k timeout 10 socat -t 5 - "TCP:$IP_U:$1,connect-timeout=5" 2>/dev/null) || true
    [ "$got" = "$2" ]
}
# The inodes of the ustack region memfds preloaded process PID holds (/proc/PID/environ
# shows only its initial environment, not the USTACK_SHM_FD it set).
region_ino() {
    local f
    for f in /proc/"$1"/fd/*; do
        case $(readlink "$f" 2>/dev/null) in
            "/memfd:ustack (deleted)") stat -L -c %i "$f" 2>/dev/null ;;
        esac
    done | sort -u | tr '\n' ' '
}
u_gone() {
    local what=$1 t0 left p
    t0=$(ms_now)
    wait_for "$GONE_SECS" u_no_stackd || true
    left=$(u_stackds | tr '\n' ' ')
    if [ -n "$left" ]; then
        net_softfail "ustackd (pid ${left% }) still runs $GONE_SECS s after $what exited"
        for p in $left; do net__kill_pid "$p" 3; done
    else
        net_log "ustackd gone $(($(ms_now) - t0)) ms after $what exited"
    fi
    USTACKD_PID=""
    return 0
}

net_k "$PY" -m http.server --bind "$IP_K" --directory "$WWW" "$P_KHTTP" >/dev/null 2>&1 &
net_bg $!
wait_until 10 net_k nc -z -w 1 "$IP_K" "$P_KHTTP" || net_fail "kernel http server did not start"

# ---------------------------------------------------------------- 1: parallel curls

check_parallel() {
    local kind=$1 rc=0 i n ready
    local d="$NET_TMPD/par.$kind"
    mkdir -p "$d"
    net_flush_neigh
    u_env "$kind" "par.$kind"
    local url="http://$IP_K:$P_KHTTP/f.bin" c="timeout -k 2 60 curl -sS --max-time 50"
    u_exec "${U_ENV[@]}" sh -c "$c -o $d/1 $url 2>$d/1.err & $c -o $d/2 $url 2>$d/2.err &
        $c -o $d/3 $url 2>$d/3.err & wait" </dev/null || rc=$?
    for i in 1 2 3; do
        if [ "$(sha256sum "$d/$i" 2>/dev/null | cut -d' ' -f1)" != "$F_SHA" ]; then
            net_softfail "$kind: parallel curl $i: download differs ($(stat -c %s "$d/$i" 2>/dev/null || echo no) bytes): $(grep -m 2 -v '^$' "$d/$i.err" | tr '\n' ' ')"
        fi
    done
    ready=$(grep -c '^ustackd: ready' "$USTACKD_OUT" 2>/dev/null || true)
    n=$(grep -c 'in use by ustackd' "$USTACKD_OUT" 2>/dev/null || true)
    if [ "$ready" != 1 ]; then
        net_softfail "$kind: $ready ustackd became ready for three parallel curls, expected 1"
    else
        net_log "$kind: three parallel curls byte-exact through one ustackd ($n spawn(s) lost the race and attached)"
    fi
    u_gone "the three curls"
}

# ---------------------------------------------------------------- 1b: one after another

# Short-lived clients in a row (a shell script's `curl ...; curl ...`). First a client
# leaves a connection its ustackd must deliver after it exits: data queued to a kernel peer
# that never reads (socat into `sleep`). That ustackd stays (docs/shm.md "Start-up,
# inheritance, exit"): the next curl, with the same configuration, attaches to it, and it
# still runs after that curl. The second curl has another address (USTACK_IP .3): the
# lingering ustackd stops for it (resetting the undelivered connection) and its own ustackd
# waits for the device instead of failing ("Network is down"). Two more follow within
# USTACK_STACKD_IDLE_MS (3 s here) and attach to that ustackd instead of starting their own.
check_back_to_back() {
    local kind=$1 i n fails=0 ip
    local d="$NET_TMPD/seq.$kind"
    mkdir -p "$d"
    net_flush_neigh
    u_env "$kind" "seq.$kind"
    local first_log=$USTACKD_OUT
    net_k timeout -k 2 30 socat -u "TCP-LISTEN:$P_SINK,reuseaddr,fork" EXEC:"sleep 20" \
        </dev/null >/dev/null 2>&1 &
    net_bg $!
    wait_until 10 net_k nc -z -w 1 "$IP_K" "$P_SINK" || net_fail "the kernel sink did not start"
    u_exec "${U_ENV[@]}" sh -c "head -c 8388608 /dev/zero | timeout -k 1 3 socat -u - TCP:$IP_K:$P_SINK" \
        </dev/null >/dev/null 2>&1 || true
    for i in 1 2 3 4; do
        ip=$IP_U
        if [ "$i" -gt 1 ]; then
            ip=${IP_U%.*}.3
            u_env "$kind" "seq.$kind.$i"
        fi
        u_exec "${U_ENV[@]/#USTACK_IP=*/USTACK_IP=$ip/24}" USTACK_STACKD_IDLE_MS=3000 timeout -k 2 60 \
            curl -sS --max-time 50 -o "$d/$i" "http://$IP_K:$P_KHTTP/f.bin" 2>"$d/$i.err" </dev/null || true
        if [ "$(sha256sum "$d/$i" 2>/dev/null | cut -d' ' -f1)" != "$F_SHA" ]; then
            fails=$((fails + 1))
            net_softfail "$kind: curl $i of 4 in a row failed: $(grep -m 2 -v '^$' "$d/$i.err" | tr '\n' ' ')"
        fi
        if [ "$i" = 1 ]; then
            sleep 0.5
            [ -n "$(u_stackds)" ] \
                || net_softfail "$kind: the first ustackd did not stay for its undelivered connection"
        fi
    done
    grep -q 'another configuration' "$first_log" 2>/dev/null \
        || net_softfail "$kind: the lingering ustackd did not stop for a client with another address"
    # Curls 3 and 4 come within USTACK_STACKD_IDLE_MS of the one before: they attach to the
    # ustackd curl 2 spawned and start none (no log of their own).
    for i in 3 4; do
        [ -s "$NET_TMPD/stackd.seq.$kind.$i" ] \
            && net_softfail "$kind: curl $i of 4 spawned a ustackd instead of attaching to the idle one"
    done
    n=$(cat "$NET_TMPD"/stackd.seq."$kind".* 2>/dev/null | grep -c 'for the stopping ustackd' || true)
    [ "$fails" = 0 ] && net_log "$kind: four curls in a row byte-exact, the first through the lingering ustackd ($n ustackd waited for the previous one to stop)"
    u_gone "the last curl in a row"
}

# ---------------------------------------------------------------- 2: standalone

check_standalone() {
    local kind=$1 pa pb ia ib i ok
    net_flush_neigh
    ustackd_start "$(net_dev "$kind")" --standalone
    local sd=$USTACKD_PID sout=$USTACKD_OUT
    u_env "$kind" "sa.$kind"
    USTACKD_OUT=$sout # the clients spawn nothing: failures show the standalone's log
    u_bg "${U_ENV[@]}" timeout -k 2 120 socat -t 5 "TCP-LISTEN:$P_A,fork,reuseaddr" EXEC:cat \
        </dev/null >/dev/null 2>"$NET_TMPD/sa.a.err"
    pa=$U_BG
    # B names the socket itself (USTACK_ATTACH).
    # Its path: the device name (as dio_dev_lock spells it) and the namespace's inode; a
    # glob would also match sockets that killed ustackds of other runs left behind.
    u_bg "${U_ENV[@]}" "USTACK_ATTACH=/run/ustack/$(net_dev "$kind" | tr -c 'A-Za-z0-9.\n-' '_').$(stat -L -c %i /run/netns/"$NS_U").sock" \
        timeout -k 2 120 socat -t 5 "TCP-LISTEN:$P_B,fork,reuseaddr" EXEC:cat \
        </dev/null >/dev/null 2>"$NET_TMPD/sa.b.err"
    pb=$U_BG
    wait_listen "$pa" "$P_A" || net_fail "$kind: socat A under the standalone ustackd does not listen: $(head -c 300 "$NET_TMPD/sa.a.err")"
    wait_listen "$pb" "$P_B" || net_fail "$kind: socat B under the standalone ustackd does not listen: $(head -c 300 "$NET_TMPD/sa.b.err")"
    [ "$(u_stackds | tr '\n' ' ')" = "$sd " ] || net_softfail "$kind: ustackds running: '$(u_stackds | tr '\n' ' ')', expected only the standalone $sd"
    ok=0
    for i in 1 2 3; do echo_ok "$P_A" "a$i" && echo_ok "$P_B" "b$i" && ok=$((ok + 1)); done
    [ "$ok" = 3 ] || net_softfail "$kind: both servers echo in $ok of 3 rounds"
    # The socat processes themselves (u_bg's pid is timeout, which runs socat).
    local sa sb
    sa=$(pgrep -P "$pa" -x socat | head -n 1 || true)
    sb=$(pgrep -P "$pb" -x socat | head -n 1 || true)
    ia=$(region_ino "$sa" || true)
    ib=$(region_ino "$sb" || true)
    if [ -z "$ia" ] || [ -z "$ib" ]; then
        net_softfail "$kind: no region fd found (socat A pid $sa: '$ia', B pid $sb: '$ib')"
    elif [ "$(echo $ia | wc -w)" != 1 ] || [ "$(echo $ib | wc -w)" != 1 ] || [ "$ia" = "$ib" ]; then
        net_softfail "$kind: the two unrelated servers share a region (memfd inode $ia)"
    else
        net_log "$kind: separate regions (memfd inodes $ia and $ib)"
    fi
    # Telemetry lists both regions with their clients' pids.
    local regs
    regs=$("$NET_ROOT/tools/ustack-stat" -n "$sd" --json /ustack/regions 2>&1 | tr -d ' \n') || true
    case $regs in
        *'"total":2'*) ;;
        *) net_softfail "$kind: /ustack/regions: expected 2 regions: $(printf '%s' "$regs" | head -c 300)" ;;
    esac
    case $regs in
        *"$sa"*"$sb"* | *"$sb"*"$sa"*) net_log "$kind: /ustack/regions: $regs" ;;
        *) net_softfail "$kind: /ustack/regions does not name the servers' pids $sa and $sb: $(printf '%s' "$regs" | head -c 300)" ;;
    esac
    # A preloaded curl meanwhile: a third region.
    local out="$NET_TMPD/sa.curl"
    u_exec "${U_ENV[@]}" timeout -k 2 60 curl -sS --max-time 50 -o "$out" \
        "http://$IP_K:$P_KHTTP/f.bin" </dev/null 2>"$NET_TMPD/sa.curl.err" || true
    [ "$(sha256sum "$out" 2>/dev/null | cut -d' ' -f1)" = "$F_SHA" ] \
        || net_softfail "$kind: curl through the standalone ustackd: download differs: $(head -c 300 "$NET_TMPD/sa.curl.err")"
    # A client configured differently is refused with one clear line; USTACK_ATTACH naming
    # a socket nobody serves is an error, not a spawn.
    local rerr="$NET_TMPD/sa.refused.err" rc=0
    u_exec "${U_ENV[@]/USTACK_IP=$IP_U\/24/USTACK_IP=198.18.$NET_X.3/24}" timeout -k 2 20 \
        curl -sS --max-time 10 -o /dev/null "http://$IP_K:$P_KHTTP/f.bin" </dev/null 2>"$rerr" || rc=$?
    if [ "$rc" = 0 ] || ! grep -qE "^ustack: (\[[0-9]+\] )?ustackd pid $sd serves USTACK_IP=$IP_U/24, not 198.18.$NET_X.3/24" "$rerr"; then
        net_softfail "$kind: a client with another USTACK_IP: exit $rc, said: $(head -c 300 "$rerr" | tr '\n' ' ')"
    fi
    rc=0
    u_exec "${U_ENV[@]}" USTACK_ATTACH=/run/ustack/no-such.sock timeout -k 2 20 \
        curl -sS --max-time 10 -o /dev/null "http://$IP_K:$P_KHTTP/f.bin" </dev/null 2>"$rerr" || rc=$?
    if [ "$rc" = 0 ] || ! grep -qE "^ustack: (\[[0-9]+\] )?USTACK_ATTACH=/run/ustack/no-such.sock: no ustackd answers there" "$rerr"; then
        net_softfail "$kind: USTACK_ATTACH to nothing: exit $rc, said: $(head -c 300 "$rerr" | tr '\n' ' ')"
    fi
    [ "$(u_stackds | tr '\n' ' ')" = "$sd " ] || net_softfail "$kind: a refused client left ustackds '$(u_stackds | tr '\n' ' ')'"
    # Killing one client leaves the other alone.
    kill -KILL "$sa" 2>/dev/null || true
    stop_bg "$pa"
    sleep 1
    echo_ok "$P_B" after-kill || net_softfail "$kind: socat B stopped echoing after socat A was killed"
    echo_ok "$P_A" after-kill && net_softfail "$kind: port $P_A still answers after its server was killed"
    stop_bg "$pb"
    sleep 3
    proc_alive "$sd" || net_softfail "$kind: the standalone ustackd exited after its clients did"
    ustackd_stop
    net_log "$kind: standalone ustackd kept running with no client and stopped on SIGTERM"
    net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
}

# ---------------------------------------------------------------- 3: spawned, shared

check_spawned() {
    local kind=$1 pa pb sd
    net_flush_neigh
    u_env "$kind" "sp.$kind"
    u_bg "${U_ENV[@]}" timeout -k 2 120 socat -t 5 "TCP-LISTEN:$P_A,fork,reuseaddr" EXEC:cat \
        </dev/null >/dev/null 2>"$NET_TMPD/sp.a.err"
    pa=$U_BG
    wait_listen "$pa" "$P_A" || net_fail "$kind: spawning socat A does not listen: $(head -c 300 "$NET_TMPD/sp.a.err")"
    u_note_stackd
    sd=$USTACKD_PID
    u_bg "${U_ENV[@]}" timeout -k 2 120 socat -t 5 "TCP-LISTEN:$P_B,fork,reuseaddr" EXEC:cat \
        </dev/null >/dev/null 2>"$NET_TMPD/sp.b.err"
    pb=$U_BG
    wait_listen "$pb" "$P_B" || net_fail "$kind: attaching socat B does not listen: $(head -c 300 "$NET_TMPD/sp.b.err")"
    [ "$(u_stackds | tr '\n' ' ')" = "$sd " ] || net_softfail "$kind: ustackds running: '$(u_stackds | tr '\n' ' ')', expected only the spawned $sd"
    echo_ok "$P_A" a || net_softfail "$kind: socat A does not echo"
    echo_ok "$P_B" b || net_softfail "$kind: socat B does not echo"
    stop_bg "$pa"
    sleep 1
    proc_alive "$sd" || net_softfail "$kind: the spawned ustackd exited while socat B still uses it"
    echo_ok "$P_B" b2 || net_softfail "$kind: socat B no longer echoes after the spawner's socat exited"
    stop_bg "$pb"
    u_gone "the last socat"
    net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
}

# ---------------------------------------------------------------- 4: SO_REUSEPORT across regions

# who_answers: the name the reuseport server that took one connection sent ("" on failure).
who_answers() {
    net_k timeout 8 socat -t 3 - "TCP:$IP_U:$P_R,connect-timeout=5" </dev/null 2>/dev/null || true
}

check_reuseport() {
    local kind=$1 pa pb i got a=0 b=0 bad=0 rc=0 err="$NET_TMPD/rp.c.err"
    net_flush_neigh
    u_env "$kind" "rp.$kind"
    u_bg "${U_ENV[@]}" timeout -k 2 120 socat "TCP-LISTEN:$P_R,fork,reuseport" \
        SYSTEM:'echo srvA' </dev/null >/dev/null 2>"$NET_TMPD/rp.a.err"
    pa=$U_BG
    wait_listen "$pa" "$P_R" || net_fail "$kind: reuseport server A does not listen: $(head -c 300 "$NET_TMPD/rp.a.err")"
    u_bg "${U_ENV[@]}" timeout -k 2 120 socat "TCP-LISTEN:$P_R,fork,reuseport" \
        SYSTEM:'echo srvB' </dev/null >/dev/null 2>"$NET_TMPD/rp.b.err"
    pb=$U_BG
    # B has joined once it answers a connection (A alone answers until then).
    for i in $(seq 1 60); do
        [ "$(who_answers)" = srvB ] && break
        proc_alive "$pb" || break
        sleep 0.1
    done
    proc_alive "$pb" || net_fail "$kind: reuseport server B (another region) could not listen: $(head -c 300 "$NET_TMPD/rp.b.err")"
    for i in $(seq 1 40); do
        got=$(who_answers)
        case $got in srvA) a=$((a + 1)) ;; srvB) b=$((b + 1)) ;; *) bad=$((bad + 1)) ;; esac
    done
    net_log "$kind: 40 connections to one port of two SO_REUSEPORT servers: A $a, B $b, failed $bad"
    [ "$bad" = 0 ] || net_softfail "$kind: $bad of 40 connections to the reuseport servers failed"
    [ "$a" -gt 0 ] && [ "$b" -gt 0 ] || net_softfail "$kind: one reuseport server got every connection (A $a, B $b)"
    # Without SO_REUSEPORT no third listener joins.
    u_exec "${U_ENV[@]}" timeout -k 2 20 socat "TCP-LISTEN:$P_R" - </dev/null >/dev/null 2>"$err" || rc=$?
    [ "$rc" != 0 ] && grep -q 'Address already in use' "$err" ||
        net_softfail "$kind: a listener without SO_REUSEPORT: exit $rc, said: $(head -c 300 "$err" | tr '\n' ' ')"
    # A gone: B takes every connection.
    stop_bg "$pa"
    sleep 0.5
    a=0 b=0 bad=0
    for i in $(seq 1 10); do
        got=$(who_answers)
        case $got in srvA) a=$((a + 1)) ;; srvB) b=$((b + 1)) ;; *) bad=$((bad + 1)) ;; esac
    done
    [ "$b" = 10 ] || net_softfail "$kind: after A stopped, B answered $b of 10 (A $a, failed $bad)"
    stop_bg "$pb"
    u_gone "the reuseport servers"
    net_u ip link set "$VETH_U" xdp off 2>/dev/null || true
}

for kind in ${NET_KINDS:-af_packet}; do
    check_parallel "$kind"
    check_back_to_back "$kind"
    check_standalone "$kind"
    check_spawned "$kind"
    check_reuseport "$kind"
done
net_finish
