#!/usr/bin/env bash
# Debian's HAProxy for a box that has none and cannot fetch it (the GPU box: no network, no
# haproxy), carried there as .deb files beside the working tree.
#
#   bash tools/carry_haproxy.sh                  # here: the packages into .devcarry/debs/ (about 6 MB)
#   bash tools/carry_haproxy.sh unpack DIR       # there: unpacked into DIR; prints the command to run
#
# The packages are haproxy and every library it links (`ldd /usr/sbin/haproxy` on Debian 12)
# except those every Linux image with PyTorch has: libc6, libgcc-s1 and libstdc++6. They are
# unpacked with `dpkg -x` into DIR, not installed, and DIR/haproxy runs the binary with DIR's
# libraries first on the library path: nothing of the box's own system changes.
set -euo pipefail
debs=.devcarry/debs
packages=(haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1 libpcre2-8-0 libssl3 libsystemd0
          libcrypt1 libcap2 libgcrypt20 libgpg-error0 liblzma5 libzstd1 liblz4-1)

if [ "${1:-}" = unpack ]; then
    dir=${2:?usage: carry_haproxy.sh unpack DIR}
    ls "$debs"/haproxy_*.deb >/dev/null 2>&1 || { echo "error: no $debs/haproxy_*.deb: run tools/carry_haproxy.sh here first and carry .devcarry" >&2; exit 1; }
    mkdir -p "$dir"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$dir"; done
    libs="$dir/usr/lib/x86_64-linux-gnu:$dir/lib/x86_64-linux-gnu"
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
        "$libs" "$dir/usr/sbin/haproxy" >"$dir/haproxy"
    chmod +x "$dir/haproxy"
    "$dir/haproxy" -v | head -1 >&2  # fails here, not mid-benchmark, if a library is still missing
    echo "$dir/haproxy"
    exit 0
fi

mkdir -p "$debs"
rm -f "$debs"/*.deb
(cd "$debs" && apt-get download "${packages[@]}")
du -sh "$debs"
