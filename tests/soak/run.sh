#!/bin/bash
# `make soak`: the long reliability runs that do not fit `make test`'s budget (root).
#   nginx_load.sh   nginx under ustack, ab -n 200000 -c 10000, with and without keep-alive
#   idle_conns.sh   19,960 idle connections held, then all used; memory per connection
#   leak_check.sh   valgrind: engine over 10,000 connections, engine suites, preloaded client
#   fuzzing         each libFuzzer target for SOAK_FUZZ_SECONDS (300) with a random seed
#                   (tools/run-fuzz; regression inputs replayed first)
# Every step runs even if an earlier one failed; the exit status is 1 if any failed.
# Each script is bounded (timeout) like the net tests. Usage: tests/soak/run.sh FUZZER...
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root" || exit 2
[ "$(id -u)" = 0 ] || { echo "soak: must run as root (network namespaces)" >&2; exit 2; }
fail=""
step() { # name bound cmd...
    local name=$1 secs=$2 t0=$SECONDS rc=0
    shift 2
    timeout -k 10 "$secs" "$@" || rc=$?
    echo "== soak $name: $([ $rc = 0 ] && echo pass || echo "FAIL (exit $rc)") ($((SECONDS - t0)) s)"
    [ $rc = 0 ] || fail="$fail $name"
}
step nginx_load 1500 "$here/nginx_load.sh"
step idle_conns 900 "$here/idle_conns.sh"
step leak_check 1800 "$here/leak_check.sh"
if [ $# -gt 0 ]; then
    step fuzz $(( (${SOAK_FUZZ_SECONDS:-300} + 120) * $# )) env FUZZ_SEED="${FUZZ_SEED:-0}" \
        tools/run-fuzz "${SOAK_FUZZ_SECONDS:-300}" "$@"
fi
[ -z "$fail" ] && { echo "make soak: all passed"; exit 0; }
echo "make soak: FAILED:$fail"
exit 1
