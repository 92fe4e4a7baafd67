#!/bin/bash
# Bad configuration stops ustackd at start-up: exit status 1, nothing on stdout ("ready"
# never printed), and on stderr one line starting "ustackd: " that names the variable. For a
# device DPDK cannot open, the EAL's own lines may come first; the last line is ustackd's.
# A second ustackd on a device in use names the first one's pid.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
net_init config 14
net_require_ustackd

DEV="net_af_packet0,iface=$VETH_U"
IP="$IP_U/24"

# run_bad NAME ONE_LINE VAR=value...: run ustackd with exactly these USTACK_* variables.
run_bad() {
    local name=$1 one=$2 rc=0 out="$NET_TMPD/cfg.out" err="$NET_TMPD/cfg.err" lines last
    shift 2
    net_u timeout 20 env "$@" "$USTACKD" --echo 7 </dev/null >"$out" 2>"$err" || rc=$?
    lines=$(wc -l <"$err")
    last=$(tail -n 1 "$err")
    if [ "$rc" != 1 ]; then
        net_softfail "$name: exit status $rc, expected 1 ($*)"
    elif grep -q 'ustackd: ready' "$out"; then
        net_softfail "$name: printed ready ($*)"
    elif [ "$one" = 1 ] && [ "$lines" != 1 ]; then
        net_softfail "$name: $lines lines on stderr, expected 1: $(head -c 200 "$err" | tr '\n' ' ')"
    elif [ "${last#ustackd: }" = "$last" ]; then
        net_softfail "$name: stderr does not end with a 'ustackd: ' line: $(head -c 200 "$err" | tr '\n' ' ')"
    elif ! echo "$last" | grep -q "$name"; then
        net_softfail "$name: message does not name $name: $last"
    else
        net_log "ok: $last"
    fi
}

run_bad USTACK_DEV 1 "USTACK_IP=$IP"
run_bad USTACK_IP 1 "USTACK_DEV=$DEV"
run_bad USTACK_IP 1 "USTACK_DEV=$DEV" "USTACK_IP=198.18.14.300/24"
run_bad USTACK_IP 1 "USTACK_DEV=$DEV" "USTACK_IP=198.18.14.2/33"
run_bad USTACK_CORES 1 "USTACK_DEV=$DEV" "USTACK_IP=$IP" "USTACK_CORES=abc"
run_bad USTACK_CORES 1 "USTACK_DEV=$DEV" "USTACK_IP=$IP" "USTACK_CORES=$(nproc)"
run_bad USTACK_MTU 1 "USTACK_DEV=$DEV" "USTACK_IP=$IP" "USTACK_MTU=70000"
run_bad USTACK_GW 1 "USTACK_DEV=$DEV" "USTACK_IP=$IP" "USTACK_GW=not-an-address"
run_bad USTACK_LOG 1 "USTACK_DEV=$DEV" "USTACK_IP=$IP" "USTACK_LOG=loud"
run_bad USTACK_NAME 1 "USTACK_DEV=$DEV" "USTACK_IP=$IP" "USTACK_NAME=12345"
run_bad USTACK_DEV 0 "USTACK_DEV=net_af_packet0,iface=no-such-if" "USTACK_IP=$IP"

# A second ustackd on a device that one already serves stops at once, naming the holder.
ustackd_start "$DEV"
run_bad USTACK_DEV 1 "USTACK_DEV=$DEV" "USTACK_IP=$IP"
grep -q "in use by ustackd pid $USTACKD_PID" "$NET_TMPD/cfg.err" \
    || net_softfail "second ustackd: message does not name pid $USTACKD_PID: $(tail -n 1 "$NET_TMPD/cfg.err")"
ustackd_stop
net_finish
