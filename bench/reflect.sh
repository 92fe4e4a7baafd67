#!/bin/bash
# bench/reflect.sh - the floor under ustack: what the veth and AF_XDP path costs per round
# trip with no protocol stack at all, beside the kernel's UDP on the same veth, in one run.
#
#   netns C (client, kernel UDP)                 netns S (server side, CPU 1)
#   veth rfc 198.18.75.1/24  <------------>      veth rfs: either bench/reflect on it through
#   bench/udprr pinned to CPU 0                  net_af_xdp (198.18.75.2, no kernel address:
#                                                C has a static neighbour entry), or the
#                                                kernel (198.18.75.2/24) with `udprr --echo`,
#                                                or (--ustack) `udprr --echo` under
#                                                libustack.so when ustack serves UDP
#
# bench/reflect turns every UDP datagram around in DPDK (swap addresses and ports; no
# checksum work, no stack, no copy). Its round trips are the most any stack on this device
# path can reach: the rest of ustack's per-packet cost is what it adds above this line.
# Runs alternate reflect, kernel (and ustack) for every scenario; the table shows the
# median over rounds and the ratios.
#
# Usage (root): bench/reflect.sh [--rounds N] [--seconds S] [--ustack] [--out FILE]
#   scenarios: udprr with 1 and 32 datagrams in flight, 64-byte payloads
# Environment: REFLECT, UDPRR (binaries), LIB (libustack.so), STACKD (ustackd).
# Exit status: 0 every run produced a result, 1 otherwise.

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
REFLECT=${REFLECT:-$ROOT/build/bench/reflect}
UDPRR=${UDPRR:-$ROOT/build/bench/udprr}
LIB=${LIB:-$ROOT/build/libustack.so}
STACKD=${STACKD:-$ROOT/build/ustackd}
while IFS= read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(USTACK\(_[A-Za-z0-9_]*\)\{0,1\}\)=.*/\1/p')

ROUNDS=2 SECS=5 USTACK=0 OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --seconds) SECS=$2; shift ;;
        --ustack) USTACK=1 ;;
        --out) OUT=$2; shift ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "reflect.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case $ROUNDS$SECS in *[!0-9]*) echo "reflect.sh: --rounds and --seconds want integers" >&2; exit 2 ;; esac
if [ "$ROUNDS" -lt 1 ] || [ "$ROUNDS" -gt 20 ] || [ "$SECS" -lt 1 ] || [ "$SECS" -gt 60 ]; then
    echo "reflect.sh: --rounds 1..20, --seconds 1..60" >&2
    exit 2
fi
[ "$(id -u)" = 0 ] || { echo "reflect.sh: run as root" >&2; exit 2; }
for b in "$REFLECT" "$UDPRR"; do [ -x "$b" ] || { echo "reflect.sh: $b missing (make $b)" >&2; exit 2; }; done
if [ "$USTACK" = 1 ] && { [ ! -x "$STACKD" ] || [ ! -r "$LIB" ]; }; then
    echo "reflect.sh: --ustack needs $LIB and $STACKD" >&2
    exit 2
fi

NS_C=rfl-c$$ NS_S=rfl-s$$ V_C=rfc V_S=rfs IP_C=198.18.75.1 IP_S=198.18.75.2 PORT=7
bench_server_pair reflect || exit 1
MAC_S=$(ip -n "$NS_S" -o link show "$V_S" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
CPU_S=1 CPU_C=0
[ "$(nproc)" -ge 2 ] || CPU_S=0

# start SIDE: the server for SIDE (reflect|kernel|ustack) in S; 0 once it printed ready.
start() {
    local side=$1
    ip -n "$NS_S" addr flush dev "$V_S"
    ip -n "$NS_S" link set "$V_S" xdp off 2>/dev/null
    ip -n "$NS_C" neigh flush all
    : >"$TMP/srv.out"
    case $side in
        reflect)
            ip -n "$NS_C" neigh replace "$IP_S" lladdr "$MAC_S" dev "$V_C" nud permanent
            # shellcheck disable=SC2016
            ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; exec "$@"' sh \
                "$REFLECT" --no-huge -m 256 --no-pci "--vdev=net_af_xdp0,iface=$V_S" \
                "--lcores=0@$CPU_S" "--file-prefix=reflect-$$" --log-level=3 -- --ip "$IP_S" \
                --seconds 600 >"$TMP/srv.out" 2>"$TMP/srv.err" </dev/null &
            ;;
        kernel)
            ip -n "$NS_S" addr add "$IP_S/24" dev "$V_S"
            ip netns exec "$NS_S" taskset -c "$CPU_S" "$UDPRR" --echo "$PORT" \
                >"$TMP/srv.out" 2>"$TMP/srv.err" </dev/null &
            ;;
        ustack)
            # shellcheck disable=SC2016
            ip netns exec "$NS_S" sh -c 'mount -t bpf bpf /sys/fs/bpf 2>/dev/null; exec env "$@"' sh \
                "LD_PRELOAD=$LIB" "USTACK_STACKD=$STACKD" "USTACK_DEV=net_af_xdp0,iface=$V_S" \
                "USTACK_IP=$IP_S/24" "USTACK_CORES=$CPU_S" "$UDPRR" --echo "$PORT" \
                >"$TMP/srv.out" 2>"$TMP/srv.err" </dev/null &
            ;;
    esac
    SRV_PID=$!
    bench_wait_line "$SRV_PID" "$TMP/srv.out" 'ready' && return 0
    echo "reflect.sh: $side server not ready: $(tail -n 3 "$TMP/srv.err" | grep -v '^lib' | tr '\n' ' ')" >&2
    return 1
}

# run SIDE CONNS: one measurement; appends a JSON line to $TMP/runs.
run() {
    local side=$1 conns=$2 out
    start "$side" || { echo "{\"side\":\"$side\",\"conns\":$conns,\"failed\":true}" >>"$TMP/runs"; return 1; }
    out=$(ip netns exec "$NS_C" taskset -c "$CPU_C" timeout $((SECS + 20)) "$UDPRR" --server "$IP_S" \
        --port "$PORT" --conns "$conns" --size 64 --seconds "$SECS" --json 2>"$TMP/cli.err")
    local rc=$?
    bench_server_stop
    if [ $rc != 0 ] || [ -z "$out" ]; then
        echo "reflect.sh: $side conns $conns failed (rc $rc): $(head -c 300 "$TMP/cli.err")" >&2
        echo "{\"side\":\"$side\",\"conns\":$conns,\"failed\":true}" >>"$TMP/runs"
        return 1
    fi
    echo "${out%\}},\"side\":\"$side\"}" >>"$TMP/runs"
    printf '[reflect %s] %-7s conns %-2s %s\n' "$(date +%H:%M:%S)" "$side" "$conns" "$out" >&2
}

SIDES="reflect kernel"
[ "$USTACK" = 1 ] && SIDES="$SIDES ustack"
FAIL=0
for conns in 1 32; do
    for ((r = 0; r < ROUNDS; r++)); do
        for side in $SIDES; do run "$side" "$conns" || FAIL=1; done
    done
done

OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)-$(hostname -s)-reflect.json}
mkdir -p "$(dirname "$OUT")"
python3 - "$TMP/runs" "$OUT" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)" \
    "$(uptime | sed 's/.*load average: //')" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump({"commit": sys.argv[3], "load": sys.argv[4], "runs": runs}, open(sys.argv[2], "w"), indent=1)
sides = [s for s in ("reflect", "kernel", "ustack") if any(r["side"] == s for r in runs)]
print("| in flight | " + " | ".join(f"{s} tps (p50/p99 us)" for s in sides) + " | kernel/reflect |"
      + (" ustack/reflect | ustack/kernel |" if "ustack" in sides else ""))
print("|---" * (2 + len(sides) + (2 if "ustack" in sides else 0)) + "|")
for conns in (1, 32):
    med = {}
    cells = []
    for s in sides:
        ok = [r for r in runs if r["side"] == s and r["conns"] == conns and not r.get("failed")]
        if not ok:
            cells.append("failed")
            continue
        med[s] = statistics.median(r["tps"] for r in ok)
        p50 = statistics.median(r["p50_us"] for r in ok)
        p99 = statistics.median(r["p99_us"] for r in ok)
        lost = sum(r["lost"] for r in ok)
        cells.append(f"{med[s]:,.0f} ({p50:g}/{p99:g})" + (f" lost {lost}" if lost else ""))
    ratio = lambda a, b: f"{med[a] / med[b]:.2f}x" if a in med and b in med and med[b] else "-"
    row = f"| {conns} | " + " | ".join(cells) + f" | {ratio('kernel', 'reflect')} |"
    if "ustack" in sides:
        row += f" {ratio('ustack', 'reflect')} | {ratio('ustack', 'kernel')} |"
    print(row)
print(f"\nresults: {sys.argv[2]} (commit {sys.argv[3]}, load average {sys.argv[4]})")
EOF
exit $FAIL
