#!/bin/bash
# bench/nagle.sh - the first exchange of a write-write-read client with Nagle on, ustack
# against the kernel: a Python client (no TCP_NODELAY) sends a request in two writes and
# reads the answer; the server (Python, in S: under ustack, then on the kernel) answers
# once it has the whole request. The second write waits until the first is acknowledged,
# so the time is that of the server's first ACK (docs/benchmarks.md "The first read's
# ACK"). Prints p50/p90/max of the exchange (from the first write to the answer) for both,
# and the ratio ustack/kernel of the p50.
#
# Usage (root): bench/nagle.sh [--conns N] [--bin DIR] [--quickack]
#   --conns N   connections measured per side (default 200, at most 5000)
#   --bin DIR   libustack.so and ustackd from DIR (default build/)
#   --quickack  the server sets TCP_QUICKACK after every recv, as latency-tuned programs
#               do on Linux (both sides)
# Exit status: 0 both sides measured, 1 a side failed, 2 on set-up errors.

set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/bench/lib.sh"
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

N=200 BIN=$ROOT/build QA=0
while [ $# -gt 0 ]; do
    case $1 in
        --conns) N=${2-}; shift ;;
        --quickack) QA=1 ;;
        --bin) BIN=${2-}; shift ;;
        *) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "nagle.sh: root needed" >&2; exit 2; }
case $N in '' | *[!0-9]*) echo "nagle.sh: bad --conns '$N'" >&2; exit 2 ;; esac
if [ "$N" -lt 1 ] || [ "$N" -gt 5000 ]; then echo "nagle.sh: --conns 1..5000" >&2; exit 2; fi
if [ ! -f "$BIN/libustack.so" ] || [ ! -x "$BIN/ustackd" ]; then
    echo "nagle.sh: no build in $BIN" >&2
    exit 2
fi
OUT=$(mktemp -d /tmp/nagle.XXXXXX)
chmod a+rx "$OUT"
NS_C="ung-c-$$" NS_S="ung-s-$$" IP_C=198.18.76.1 IP_S=198.18.76.2 PORT=7070
# shellcheck disable=SC2317 # called by the traps
cleanup() { bench_ns_teardown "$NS_C" "$NS_S"; }
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

cat >"$OUT/srv.py" <<'EOF'
import socket, sys
quickack = sys.argv[2] == "1"
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    got = 0
    while got < 2000:
        d = c.recv(4096)
        if not d:
            break
        got += len(d)
        if quickack:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    c.sendall(b"ok" * 10)
    c.close()
EOF
cat >"$OUT/cli.py" <<'EOF'
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ts = []
deadline = time.monotonic() + 120
for i in range(n):
    if time.monotonic() > deadline:
        sys.exit("nagle client: out of time after %d connections" % i)
    c = socket.create_connection((host, port), timeout=5)
    t0 = time.perf_counter()
    c.send(b"h" * 1000)
    c.send(b"b" * 1000)  # Nagle: held until the first is acknowledged
    if not c.recv(100):
        sys.exit("nagle client: no answer")
    ts.append((time.perf_counter() - t0) * 1e3)
    c.close()
ts.sort()
print("%.3f %.3f %.3f" % (ts[len(ts) // 2], ts[int(len(ts) * 0.9)], ts[-1]))
EOF

bench_topology "$NS_C" "$NS_S" ngc ngs || { echo "nagle.sh: topology failed" >&2; exit 2; }
ip -n "$NS_C" addr add "$IP_C/24" dev ngc
# side KIND: start the server in S (ustack or kernel), measure, stop it. Prints "p50 p90 max".
side() {
    local kind=$1 i p
    if [ "$kind" = ustack ]; then
        ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; exec env "$@"' sh \
            "LD_PRELOAD=$BIN/libustack.so" "USTACK_STACKD=$BIN/ustackd" \
            "USTACK_DEV=net_af_xdp0,iface=ngs" "USTACK_IP=$IP_S/24" USTACK_CORES=1 \
            "USTACK_NAME=ung-$$" python3 "$OUT/srv.py" "$PORT" "$QA" >"$OUT/srv.$kind" 2>&1 </dev/null &
    else
        ip -n "$NS_S" addr add "$IP_S/24" dev ngs
        ip netns exec "$NS_S" python3 "$OUT/srv.py" "$PORT" "$QA" >"$OUT/srv.$kind" 2>&1 </dev/null &
    fi
    for ((i = 0; i < 300; i++)); do
        grep -q ready "$OUT/srv.$kind" 2>/dev/null && break
        sleep 0.1
    done
    # Warm-up (ARP, ustackd's first connection), then the measured connections.
    timeout 60 ip netns exec "$NS_C" python3 "$OUT/cli.py" "$IP_S" "$PORT" 5 >/dev/null 2>&1
    timeout 150 ip netns exec "$NS_C" python3 "$OUT/cli.py" "$IP_S" "$PORT" "$N" >"$OUT/cli.$kind" 2>&1
    local rc=$?
    for p in $(ip netns pids "$NS_S"); do kill -TERM "$p" 2>/dev/null; done
    for p in $(ip netns pids "$NS_S"); do bench_kill_bounded "$p" TERM 5; done
    [ "$kind" = ustack ] || ip -n "$NS_S" addr flush dev ngs
    return $rc
}
rc=0
side ustack || rc=1
side kernel || rc=1
read -r up50 up90 umax <"$OUT/cli.ustack"
read -r kp50 kp90 kmax <"$OUT/cli.kernel"
printf 'first exchange, ms (p50 / p90 / max), %s connections each:\n' "$N"
printf '  ustack  %s / %s / %s\n' "${up50:-?}" "${up90:-?}" "${umax:-?}"
printf '  kernel  %s / %s / %s\n' "${kp50:-?}" "${kp90:-?}" "${kmax:-?}"
if [ "$rc" = 0 ]; then
    awk -v u="$up50" -v k="$kp50" 'BEGIN { if (k > 0) printf "  ratio ustack/kernel (p50): %.2fx\n", u / k }'
else
    echo "nagle.sh: a side failed ($OUT)" >&2
fi
exit $rc
