#!/usr/bin/env bash
# The performance targets in one command: the containerd benchmark on the
# medium and the large closure and the registry benchmark on the medium
# one, one after another, each printing its own table; then each target
# beside what this run measured. Exits 1 if one was missed.
#
#   bench/targets.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
results=$(mktemp)
trap 'rm -f "$results"' EXIT
export BENCH_RESULTS=$results
for step in "containerd.sh medium" "containerd.sh large" "registry.sh medium"; do
    echo "== bench/$step"
    # shellcheck disable=SC2086
    bash "$here"/$step
    echo
done

get() {
    local v
    v=$(awk -v k="$1" '$1 == k { v = $2 } END { print v }' "$results")
    [ -n "$v" ] || { echo "bench/targets.sh: no figure $1 in this run" >&2; exit 2; }
    echo "$v"
}
missed=0
# target NAME MEASURED OP LIMIT UNIT
target() {
    local ok
    ok=$(echo "$2 $3 $4" | bc -l)
    [ "$ok" = 1 ] || missed=1
    printf '%-56s %9.3f %-2s %6s %-4s %s\n' "$1" "$2" "$3" "$4" "$5" "$([ "$ok" = 1 ] && echo met || echo MISSED)"
}
echo "== targets (all figures from this run)"
for p in medium large; do
    target "$p: cold import / (cp -a + sync), medians" "$(get "$p.cold_ratio")" "<=" 1.0 x
    target "$p: warm re-import after the cache drop" "$(get "$p.warm_after_drop")" "<=" 0.1 s
    target "$p: one store path changed, after the cache drop" "$(get "$p.one_path_after_drop")" "<=" 0.15 s
done
target "medium: nixoci pull / ctr images pull" "$(get medium.pull_ratio)" "<=" 0.5 x
target "medium: nixoci push / skopeo copy, medians" "$(get medium.push_ratio)" "<=" 0.6 x
peak=0
for k in large.peak_mib medium.peak_mib medium.registry_peak_mib; do
    v=$(get "$k")
    peak=$(echo "if ($v > $peak) $v else $peak" | bc -l)
done
target "peak memory, any nixoci run above" "$peak" "<" 100 MiB
exit "$missed"
