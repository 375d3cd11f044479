#!/usr/bin/env bash
# tests/cli/test_install.sh - `make install` into a staging directory gives a
# binary that works without the source tree: it finds its data (configs,
# tokenizers, the default model) under <prefix>/share/diffusiond, run from
# another directory, and generates an image; the man page is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s BUILD="$BUILD" install DESTDIR="$tmp/stage" PREFIX=/opt/diffusiond >/dev/null
bin="$tmp/stage/opt/diffusiond/bin/diffusiond"
fail=0
check() { if eval "$2"; then echo "OK       $1"; else echo "NOT OK   $1"; fail=1; fi; }
check "binary installed" "[ -x '$bin' ]"
check "man page installed" "[ -f '$tmp/stage/opt/diffusiond/share/man/man1/diffusiond.1' ]"
check "data installed" "[ -f '$tmp/stage/opt/diffusiond/share/diffusiond/tokenizers/clip/vocab.json' ] && [ -d '$tmp/stage/opt/diffusiond/share/diffusiond/configs/sdxl-base' ]"
# Away from the source tree: a copy of the installed tree in another place,
# run from an empty directory with no checkout around it.
mv "$tmp/stage/opt/diffusiond" "$tmp/elsewhere"
mkdir "$tmp/cwd"
out=$(cd "$tmp/cwd" && "$tmp/elsewhere/bin/diffusiond" generate --prompt "installed" --steps 2 \
      --width 64 --height 64 --seed 3 --output "$tmp/cwd/x.png" 2>&1) || true
check "generates an image with the installed default model" "[ -s '$tmp/cwd/x.png' ]"
# ...and it was the installed copy: without it, nothing else is found.
mv "$tmp/elsewhere/share/diffusiond/models" "$tmp/models-away"
check "...not one in the source tree" "! (cd '$tmp/cwd' && '$tmp/elsewhere/bin/diffusiond' generate --prompt x --steps 1 --width 64 --height 64 --output '$tmp/cwd/y.png' >/dev/null 2>&1)"
mv "$tmp/models-away" "$tmp/elsewhere/share/diffusiond/models"
check "--version names the kernels" "'$tmp/elsewhere/bin/diffusiond' --version | grep -q 'kernels'"
[ $fail = 0 ] && echo "0 failed" || { echo "$out"; echo "failed"; exit 1; }
