#!/usr/bin/env bash
# tests/run.sh - the whole test suite: unit + parity tests, fuzz corpus replay,
# CLI tests and HTTP integration tests. Run from the repository root, after
# `make` (the Makefile's `test` target does both). BUILD selects the build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}

echo "== unit and parity tests"
"$BUILD/unit_tests"

# One binary carries kernels for several instruction set levels; run the
# suite again at every lower level this CPU can run, forced, so that no
# level's kernels go untested because the build machine prefers another.
levels=$("$BUILD/diffusiond" --version | sed -n 's/^levels this CPU runs: //p')
top=${levels##* }
for level in $levels; do
    [ "$level" = "$top" ] && continue
    echo "== unit and parity tests, DIFFUSIOND_CPU=$level"
    DIFFUSIOND_CPU=$level "$BUILD/unit_tests"
done

echo "== fuzz corpus replay"
"$BUILD/fuzz_replay"

for t in tests/cli/*.sh; do
    [ -e "$t" ] || continue
    echo "== $t"
    BUILD=$BUILD bash "$t"
done
echo "== HTTP integration tests"
BUILD=$BUILD bash tests/http/run.sh

echo "all tests passed"
