#!/usr/bin/env bash
# A bounded fuzzing run (about a minute in all) of the readers of outside
# input: `scripts/fuzz.sh [SECONDS_PER_TARGET]`. New corpus entries and
# crash artifacts go to a temporary directory, never into the checkout; a
# crash fails the run and its input is printed. Needs a nightly toolchain;
# where none is installed, stable with RUSTC_BOOTSTRAP=1; where neither can
# build the targets, it says so and skips.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
if ! "${fuzz[@]}" build -s none >/tmp/nixoci-fuzz-build.log 2>&1; then
    echo "fuzz: SKIPPED: the fuzz targets do not build with this toolchain:" >&2
    tail -20 /tmp/nixoci-fuzz-build.log >&2
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in reference documents archive; do
    mkdir -p "$work/$target/corpus" "$work/$target/artifacts"
    cp fuzz/corpus/$target/* "$work/$target/corpus/"
    echo "fuzz: $target for ${seconds}s" >&2
    if ! "${fuzz[@]}" run -s none "$target" "$work/$target/corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 \
        -artifact_prefix="$work/$target/artifacts/" >"$work/$target.log" 2>&1; then
        tail -40 "$work/$target.log" >&2
        for a in "$work/$target/artifacts/"*; do
            [ -f "$a" ] && { echo "fuzz: $target crashed on (base64):" >&2; base64 "$a" >&2; }
        done
        exit 1
    fi
    grep -E '^Done|#[0-9]+.*DONE' "$work/$target.log" | tail -1 >&2 || true
done
