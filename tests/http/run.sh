#!/usr/bin/env bash
# tests/http/run.sh - HTTP integration tests of `diffusiond serve` against the
# real binary: the API suite (test_http.py), the compatible APIs with real
# clients (test_compat.py: the openai and webuiapi packages from PyPI) and
# the web page in headless Chromium through Selenium (test_page.py, run by
# Debian's python3 with python3-selenium and chromium-driver), the API suite
# again on the Redis store, and a fleet over one Redis (test_fleet.py:
# API nodes and worker processes, crashes, outages). Run from
# anywhere after `make`; BUILD selects the build directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
python3 tests/http/test_http.py --binary "$BUILD/diffusiond" "$@"
python3 tests/http/test_compat.py --binary "$BUILD/diffusiond" "$@"
# The same API suite on the Redis store, then several processes over one Redis.
if command -v redis-server >/dev/null; then
    echo "== the API suite on the Redis store"
    DIFFUSIOND_TEST_STORE=redis python3 tests/http/test_http.py --binary "$BUILD/diffusiond" "$@"
fi
python3 tests/http/test_fleet.py --binary "$BUILD/diffusiond" "$@"
PAGE_PY=python3
[ -x /usr/bin/python3 ] && PAGE_PY=/usr/bin/python3  # where python3-selenium is
"$PAGE_PY" tests/http/test_page.py --binary "$BUILD/diffusiond"
