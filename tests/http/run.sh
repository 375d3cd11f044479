#!/usr/bin/env bash
# tests/http/run.sh - HTTP integration tests of `diffusiond serve` against the
# real binary: the API suite (test_http.py) and the web page in headless
# Chromium (test_page.py; skipped when chromium is missing). Run from
# anywhere after `make`; BUILD selects the build directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
python3 tests/http/test_http.py --binary "$BUILD/diffusiond" "$@"
python3 tests/http/test_page.py --binary "$BUILD/diffusiond"
