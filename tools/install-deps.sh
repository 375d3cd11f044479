#!/usr/bin/env bash
# tools/install-deps.sh - the Debian packages diffusiond builds and tests with.
# Run as root (or with sudo) on Debian 12.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config clang libclang-rt-14-dev libomp-14-dev \
    libdnnl-dev libjansson-dev libpng-dev zlib1g-dev libunistring-dev \
    libmicrohttpd-dev libsqlite3-dev libhiredis-dev libminizip-dev libjpeg62-turbo-dev \
    python3 chromium redis-server >/dev/null
