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
    libmicrohttpd-dev libsqlite3-dev libhiredis-dev libcurl4-openssl-dev libminizip-dev \
    libjpeg62-turbo-dev sqlite3 \
    python3 python3-venv python3-selenium chromium chromium-driver redis-server >/dev/null
# The compatibility tests drive the server with the clients people use.
PIP_PKGS="openai webuiapi"
python3 -m pip install -q $PIP_PKGS 2>/dev/null ||
    python3 -m pip install -q --break-system-packages $PIP_PKGS
# The fleet tests' S3: moto's server, in a virtual environment of its own.
MOTO_VENV=${DIFFUSIOND_MOTO_VENV:-$HOME/.cache/diffusiond/moto-venv}
if [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
    python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install -q "moto[server]"
fi
