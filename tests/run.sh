#!/usr/bin/env bash
# tests/run.sh - the whole test suite: unit + parity tests, fuzz corpus replay,
# CLI tests and HTTP integration tests. Run from the repository root, after
# `make` (the Makefile's `test` target does both). BUILD selects the build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}

echo "== unit and parity tests"
"$BUILD/unit_tests"

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
