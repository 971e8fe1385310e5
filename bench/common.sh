# Sourced by the benchmarks: set-up, the release binary ($bin), the closure
# of profile $1 ($profile, $root), a scratch directory ($work) and time_of.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
profile=${1:-medium}
make_closure=${MAKE_CLOSURE:-$(cd .. && pwd)/shared/bench/make-closure}
cargo build --release --locked --quiet
bin=$PWD/target/release/nixoci
root=$("$make_closure" "$profile")
work=$(mktemp -d)

# time_of CMD: wall seconds and peak RSS (KiB) of a shell command line.
time_of() {
    /usr/bin/time -f '%e %M' -o "$work/time" bash -c "$1" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    cat "$work/time"
}

# median A B C: the middle of three figures.
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
