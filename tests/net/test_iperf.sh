#!/bin/bash
# Stock Debian iperf3 under LD_PRELOAD=libustack.so (af_xdp, one stack core), as server and
# as client, against iperf3 on kernel sockets in the peer namespace. Each run is 3 s with
# JSON output (-J), checked:
#   server - `iperf3 -s` under ustack: 4 parallel TCP streams from the kernel side, one
#            reverse stream (-R: ustack sends), UDP at 40 Mbit/s both ways. TCP: exit 0, the
#            receiver got at least 10 MB, and the receiver's byte count matches what the
#            sender says it sent within what was still in flight; UDP: exit 0 and at least
#            80 % of the datagrams arrived (losses on a busy 2-vCPU VM are at the
#            receiving socket's buffer, which both stacks count); ustackd counted the
#            traffic (tcp_in, udp_in, udp_out);
#   client - iperf3 -c under ustack against a kernel iperf3 -s: one TCP stream each way.
# Every program is bounded (timeout); teardown kills whatever still runs in the namespaces.
# A failed check is reported (with the tail of ustackd's log) and the other checks still run.
# About 35 s. Knobs: NET_IPERF_KIND (device, default af_xdp), NET_IPERF_SECS (per run),
# LIBUSTACK.
# net-timeout: 300
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init iperf 22
net_require_tools iperf3 python3
net_require_ustackd

LIBUSTACK=${LIBUSTACK:-$NET_ROOT/build/libustack.so}
[ -r "$LIBUSTACK" ] || net_fail "$LIBUSTACK not built (make build/libustack.so)"
KIND=${NET_IPERF_KIND:-af_xdp}
SECS=${NET_IPERF_SECS:-3}
PORT=5201
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || PY=""
[ -x "$PY" ] || PY=$(command -v python3)

# Reads an iperf3 -J report on stdin; prints "ok <summary>" or "fail <why>".
# argv: tcp|udp, the minimum bytes received (tcp) or fraction of datagrams (udp).
CHECK="$NET_TMPD/check.py"
cat >"$CHECK" <<'EOF'
import json, sys
kind, floor = sys.argv[1], float(sys.argv[2])
try:
    d = json.load(sys.stdin)
except ValueError as e:
    print("fail no JSON report (%s)" % e)
    sys.exit()
if "error" in d:
    print("fail iperf3: %s" % d["error"])
    sys.exit()
end = d.get("end", {})
if kind == "tcp":
    snt, rcv = end["sum_sent"], end["sum_received"]
    # The sender counts what it wrote into its socket until its time is up; the receiver
    # what it read until the test ended. They differ by what the two socket buffers held
    # at the end: at most the sender's (Linux's tcp_wmem max, 4 MiB) plus the receiver's
    # (ustack's receive buffer autotunes up to USTACK_RCVBUF_MAX, 4 MiB, plus its 64 KiB
    # shared ring; Linux's tcp_rmem max is 6 MiB), so 11 MiB per stream.
    streams = max(1, len(end.get("streams", [])))
    if rcv["bytes"] < floor:
        print("fail received %d bytes < %d" % (rcv["bytes"], floor))
    elif abs(snt["bytes"] - rcv["bytes"]) > streams * 11 * 1024 * 1024:
        print("fail sent %d bytes but received %d" % (snt["bytes"], rcv["bytes"]))
    else:
        print("ok %.0f Mbit/s, %d bytes received, %s retransmits" % (
            rcv["bits_per_second"] / 1e6, rcv["bytes"], snt.get("retransmits", "?")))
else:
    s = end["sum"]
    got = s["packets"] - s["lost_packets"]
    if s["packets"] == 0 or got < floor * s["packets"]:
        print("fail %d of %d datagrams arrived" % (got, s["packets"]))
    else:
        print("ok %.0f Mbit/s, %d of %d datagrams arrived (%.2f %% lost)" % (
            s["bits_per_second"] / 1e6, got, s["packets"], s["lost_percent"]))
EOF

# run TAG RUNNER HOST CHECKARGS -- IPERF-ARGS...: one bounded client run, checked.
run() {
    local tag=$1 runner=$2 host=$3 kind=$4 floor=$5 out rc=0 res
    shift 6
    out="$NET_TMPD/iperf.$tag.json"
    $runner timeout -k 5 $((SECS + 30)) iperf3 -c "$host" -p "$PORT" -t "$SECS" -J "$@" \
        >"$out" 2>"$out.err" </dev/null || rc=$?
    res=$("$PY" "$CHECK" "$kind" "$floor" <"$out" 2>&1 | tail -n 1)
    case "$res" in
    ok*) net_log "$tag: iperf3 $*: ${res#ok } (exit $rc)" ;;
    *) net_softfail "$tag: iperf3 $* (exit $rc): ${res#fail } $(head -c 200 "$out.err")" ;;
    esac
}

# wait_port OUT PID: until the iperf3 -s writing OUT (--forceflush) says it listens. Not by
# connecting to it: iperf3 -s takes any connection for a test's control connection, and when
# that test fails it closes its listener and opens a new one; a client connecting in between
# sat in the old listener's accept queue and was reset with it (seen under the sanitizers,
# where the server is slower: "unable to receive control message: Connection reset by peer").
wait_port() {
    local out=$1 pid=$2 end=$((SECONDS + 20))
    while [ "$SECONDS" -lt "$end" ] && proc_alive "$pid"; do
        grep -q "^Server listening on $PORT" "$out" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------- 1: the server under ustack

u_env "$KIND" server
u_bg "${U_ENV[@]}" timeout -k 5 200 iperf3 -s --forceflush -B "$IP_U" -p "$PORT" >"$NET_TMPD/server.out" 2>&1 </dev/null
SRV=$U_BG
wait_port "$NET_TMPD/server.out" "$SRV" || net_fail "iperf3 -s under ustack does not listen: $(grep -v '^lib' "$NET_TMPD/server.out" | tail -n 3 | tr '\n' ' ')"
u_note_stackd
ustackd_stats ST0
run server-tcp-4 net_k "$IP_U" tcp 10000000 -- -P 4
run server-tcp-reverse net_k "$IP_U" tcp 10000000 -- -R
run server-udp net_k "$IP_U" udp 0.8 -- -u -b 40M
run server-udp-reverse net_k "$IP_U" udp 0.8 -- -u -b 40M -R
ustackd_stats ST1
# At least half of what the runs above need to pass (40 Mbit/s of 1448-byte datagrams for
# 3 s is about 10,000 each way).
for c in tcp_in:10000 udp_in:5000 udp_out:5000; do
    min=${c#*:} c=${c%:*}
    d=$(($(stat_sum "$ST1" "$c") - $(stat_sum "$ST0" "$c")))
    if [ "$d" -gt "$min" ]; then net_log "server: ustackd's $c grew by $d"; else
        net_softfail "server: ustackd's $c grew by only $d"
    fi
done
net__kill_pid "$SRV" 5
wait "$SRV" 2>/dev/null || true
end=$((SECONDS + 10))
while [ "$SECONDS" -lt "$end" ] && [ -n "$(u_stackds)" ]; do sleep 0.1; done
[ -z "$(u_stackds)" ] || net_softfail "ustackd still runs 10 s after iperf3 -s exited"
for p in $(u_stackds); do net__kill_pid "$p" 3; done
[ "$KIND" = af_xdp ] && net_u ip link set "$VETH_U" xdp off 2>/dev/null

# ---------------------------------------------------------------- 2: the client under ustack

net_k timeout -k 5 200 iperf3 -s --forceflush -B "$IP_K" -p "$PORT" >"$NET_TMPD/kserver.out" 2>&1 </dev/null &
KS=$!
net_bg "$KS"
wait_port "$NET_TMPD/kserver.out" "$KS" || net_fail "the kernel iperf3 -s does not listen"
# shellcheck disable=SC2317 # called through run's RUNNER argument
urun() { u_exec "${U_ENV[@]}" "$@"; }
# client TAG ARGS...: one run under ustack (its own ustackd, which prints its statistics
# when it stops: USTACK_LOG=info); that ustackd must have carried the stream.
client() {
    local tag=$1 end fs n
    shift
    u_env "$KIND" "$tag"
    U_ENV+=(USTACK_LOG=info)
    run "$tag" urun "$IP_K" tcp 10000000 -- "$@"
    end=$((SECONDS + 10))
    while [ "$SECONDS" -lt "$end" ] && [ -n "$(u_stackds)" ]; do sleep 0.1; done
    if grep -q '^ustackd: stats end' "$USTACKD_OUT" 2>/dev/null; then
        ustackd_final_stats fs
        n=$(stat_sum "$fs" tcp_bytes_in tcp_bytes_out)
        if [ "$n" -gt 10000000 ]; then net_log "$tag: its ustackd carried $n TCP payload bytes"; else
            net_softfail "$tag: its ustackd carried only $n TCP payload bytes"
        fi
    else
        net_softfail "$tag: no final statistics from the client's ustackd ($USTACKD_OUT)"
    fi
}
client client-tcp
client client-tcp-reverse -R
net_finish
