#!/bin/sh
# tests/sem/build.sh - builds sem_peer and every sem_<topic> program into $BUILD/sem
# (BUILD defaults to build). Plain C11 + POSIX, no project libraries: the binaries run on
# the kernel as they are and on ustack under LD_PRELOAD=libustack.so.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${BUILD:-$ROOT/build}/sem
CC=${CC:-gcc}
mkdir -p "$OUT"
n=0
for src in "$ROOT"/tests/sem/sem_*.c; do
    name=$(basename "$src" .c)
    $CC -std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror -pthread "$src" -o "$OUT/$name"
    n=$((n + 1))
done
echo "built $n programs (sem_peer and the tests) in $OUT"
