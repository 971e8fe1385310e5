#!/usr/bin/env bash
# Debian's busybox-static for arm64, for the multi-platform test flakes:
# fetched once (dpkg --add-architecture arm64; apt-get download) and
# unpacked into the test cache. Prints the binary's path.
set -euo pipefail
dir="${XDG_CACHE_HOME:-$HOME/.cache}/nixoci-test/busybox-arm64"
mkdir -p "$dir"
# One fetch at a time (tests may ask in parallel).
exec 9>"$dir/.lock"
flock 9
if [ ! -x "$dir/busybox" ]; then
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        "${sudo_cmd[@]}" dpkg --add-architecture arm64
        "${sudo_cmd[@]}" apt-get update -qq >&2
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -qq busybox-static:arm64 >&2 ||
        { "${sudo_cmd[@]}" apt-get update -qq >&2 && apt-get download -qq busybox-static:arm64 >&2; })
    dpkg-deb -x "$work"/busybox-static_*_arm64.deb "$work/x"
    cp "$work/x/bin/busybox" "$dir/busybox.tmp"
    mv "$dir/busybox.tmp" "$dir/busybox"
fi
echo "$dir/busybox"
