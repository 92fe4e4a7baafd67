#!/bin/bash
# Runs every tests/net/test_*.sh (as root), prints a summary and exits non-zero if any test
# failed. A test exiting 77 is a SKIP: never counted as a pass, and it fails the run unless
# NET_ALLOW_SKIP=1. Each test is bounded by NET_TEST_TIMEOUT seconds when that is set,
# else by the bound its header declares in a line "# net-timeout: SECONDS" (for the long
# load tests), else by 150 s.
# Usage: tests/net/run-all.sh [test_name ...]   (default: all)
set -eu
here=$(cd "$(dirname "$0")" && pwd)

# The bound for one test file.
test_timeout() {
    local n
    if [ -n "${NET_TEST_TIMEOUT:-}" ]; then
        echo "$NET_TEST_TIMEOUT"
        return
    fi
    n=$(sed -n 's/^# net-timeout: *\([0-9][0-9]*\) *$/\1/p' "$1" | head -n 1)
    echo "${n:-150}"
}

die() { echo "net tests: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (they create network namespaces and veths)"
command -v ip >/dev/null 2>&1 || die "'ip' (iproute2) not found"
command -v timeout >/dev/null 2>&1 || die "'timeout' (coreutils) not found"
ip netns list >/dev/null 2>&1 || die "'ip netns' is not usable here"
probe="usk-probe-$$"
ip netns add "$probe" 2>/dev/null || die "cannot create a network namespace ('ip netns add' failed)"
ip netns del "$probe"

tests=()
if [ $# -gt 0 ]; then
    for t in "$@"; do
        t=${t%.sh}; t=${t#test_}
        [ -x "$here/test_$t.sh" ] || die "no test $here/test_$t.sh"
        tests+=("$here/test_$t.sh")
    done
else
    for t in "$here"/test_*.sh; do
        [ -e "$t" ] && tests+=("$t")
    done
fi
[ ${#tests[@]} -gt 0 ] || die "no tests found in $here"

# reap_namespaces NAME: a test killed by its bound (SIGKILL 10 s after SIGTERM, while its
# EXIT trap was still tearing down) may leave its namespaces (usk-<k|u|r>-NAME-<pid>-<rand>,
# lib.sh's net_init) and the processes in them: end both, so later tests and runs start clean.
reap_namespaces() {
    local ns p
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^usk-[a-z]+-$1-[0-9]+-"); do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null && echo "   (removed namespace $ns left by the killed test)"
    done
    return 0
}

pass=0 fail=0 skip=0
failed="" skipped=""
start=$SECONDS
for t in "${tests[@]}"; do
    name=$(basename "$t" .sh); name=${name#test_}
    t0=$SECONDS
    rc=0
    TIMEOUT=$(test_timeout "$t")
    timeout -k 10 "$TIMEOUT" "$t" || rc=$?
    dt=$((SECONDS - t0))
    case $rc in
        0) pass=$((pass + 1)); echo "== $name: pass (${dt}s)" ;;
        77) skip=$((skip + 1)); skipped="$skipped $name"; echo "== $name: SKIP (${dt}s)" ;;
        124 | 137) fail=$((fail + 1)); failed="$failed $name"
            echo "FAIL $name: timed out after $TIMEOUT s"; echo "== $name: FAIL (${dt}s)"
            reap_namespaces "$name" ;;
        *) fail=$((fail + 1)); failed="$failed $name"; echo "== $name: FAIL, exit $rc (${dt}s)" ;;
    esac
done

echo "net tests: $pass passed, $fail failed, $skip skipped ($((SECONDS - start)) s)${failed:+; failed:$failed}${skipped:+; skipped:$skipped}"
[ "$fail" = 0 ] || exit 1
if [ "$skip" != 0 ] && [ "${NET_ALLOW_SKIP:-0}" != 1 ]; then
    echo "net tests: skipped tests fail the run (set NET_ALLOW_SKIP=1 to allow skips)"
    exit 1
fi
exit 0
