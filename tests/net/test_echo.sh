#!/bin/bash
# ustackd's built-in services with kernel tools, through net_af_xdp and net_af_packet:
#   echo    - socat sends 10 MiB of random data; what comes back has the same sha256;
#   discard - nc sends 10 MiB; the stats' tcp_bytes_in grows by at least that much;
#   source  - socat reads 1 MiB; byte i is i % 251.
# A failed check is reported and the remaining checks still run.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init echo 11
net_require_tools socat nc sha256sum cmp
net_require_ustackd

BYTES=$((10 * 1024 * 1024))
SRC_BYTES=$((1024 * 1024))
IN="$NET_TMPD/in.bin"
make_random "$IN" "$BYTES"
IN_SHA=$(sha "$IN")
PATTERN="$NET_TMPD/pattern.bin"
make_source_pattern "$PATTERN" "$SRC_BYTES"

# first_diff A B: "offset N: got X, want Y" for the first differing byte (offsets from 0).
first_diff() {
    cmp -l "$1" "$2" 2>/dev/null | awk '
        function oct(s,  v, i) { v = 0; for (i = 1; i <= length(s); i++) v = v * 8 + substr(s, i, 1); return v }
        NR == 1 { printf "offset %d: got %d, want %d", $1 - 1, oct($2), oct($3) }
        END { if (NR) printf " (%d bytes differ)", NR }'
}

check_echo() {
    local kind=$1 out="$NET_TMPD/echo.$1.bin" t0=$SECONDS got
    # socat half-closes after stdin's EOF and waits (-t) for the echo to finish.
    if ! net_k timeout 45 socat -t 20 -b 65536 - "TCP:$IP_U:7,connect-timeout=5" <"$IN" >"$out" \
        2>"$NET_TMPD/socat.err"; then
        net_softfail "$kind: echo: socat failed: $(head -c 200 "$NET_TMPD/socat.err" | tr '\n' ' ')"
        return
    fi
    got=$(fsize "$out")
    if [ "$got" != "$BYTES" ]; then
        net_softfail "$kind: echo returned $got of $BYTES bytes"
    elif [ "$(sha "$out")" != "$IN_SHA" ]; then
        net_softfail "$kind: echo returned different bytes, first at $(first_diff "$out" "$IN")"
    else
        net_log "$kind: echo 10 MiB byte-exact in $((SECONDS - t0)) s"
    fi
    rm -f "$out"
}

check_discard() {
    local kind=$1 t0=$SECONDS st before grew=0 i
    ustackd_stats st
    before=$(stat_sum "$st" tcp_bytes_in)
    if ! net_k timeout 40 nc -N -w 10 "$IP_U" 9 <"$IN" >/dev/null 2>"$NET_TMPD/nc.err"; then
        net_softfail "$kind: discard: nc failed: $(head -c 200 "$NET_TMPD/nc.err" | tr '\n' ' ')"
        return
    fi
    for ((i = 0; i < 10; i++)); do
        ustackd_stats st
        grew=$(($(stat_sum "$st" tcp_bytes_in) - before))
        [ "$grew" -ge "$BYTES" ] && break
        sleep 0.5
    done
    if [ "$grew" -ge "$BYTES" ]; then
        net_log "$kind: discard 10 MiB in $((SECONDS - t0)) s (tcp_bytes_in +$grew)"
    else
        net_softfail "$kind: discard: tcp_bytes_in grew by $grew, expected >= $BYTES"
    fi
}

check_source() {
    local kind=$1 out="$NET_TMPD/source.$1.bin" got
    # head closes the pipe after SRC_BYTES, which ends socat (and the connection).
    { net_k timeout 20 socat -u "TCP:$IP_U:19,connect-timeout=5" STDOUT 2>/dev/null || true; } \
        | head -c "$SRC_BYTES" >"$out" || true
    got=$(fsize "$out")
    if [ "$got" != "$SRC_BYTES" ]; then
        net_softfail "$kind: source gave $got of $SRC_BYTES bytes"
    elif ! cmp -s "$out" "$PATTERN"; then
        net_softfail "$kind: source bytes are not i % 251, first at $(first_diff "$out" "$PATTERN")"
    else
        net_log "$kind: source 1 MiB matches i % 251"
    fi
}

for kind in ${NET_KINDS:-af_xdp af_packet}; do
    net_flush_neigh
    ustackd_start "$(net_dev "$kind")" --echo 7 --discard 9 --source 19
    check_echo "$kind"
    check_discard "$kind"
    check_source "$kind"
    ustackd_stop
done
net_finish
