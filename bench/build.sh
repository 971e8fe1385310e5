#!/usr/bin/env bash
# Benchmark: nixoci building a closure into an OCI layout, against the floor
# pipelines over the same store paths, in the same run.
#
#   bench/build.sh [small|medium|large]     (default: medium)
#
# Prints wall times, ratios to the floors, blob sizes and peak RSS.
. "$(dirname "$0")/common.sh"
mapfile -t paths < <(nix-store --query --requisites "$root")
trap 'rm -rf "$work"' EXIT

# Warm the page cache.
# (through cat: GNU tar reads nothing when it writes to /dev/null itself)
tar -cf - --sort=name "${paths[@]}" 2>/dev/null | cat > /dev/null

floor() { time_of "tar -cf - --sort=name ${paths[*]} 2>/dev/null $1 | sha256sum"; }

read -r f_none _ < <(floor "")
read -r f_gzip _ < <(floor "| pigz -6 -p2")
read -r f_zstd _ < <(floor "| zstd -3 -T2 -q")
pigz_bytes=$(tar -cf - --sort=name "${paths[@]}" 2>/dev/null | pigz -6 -p2 | wc -c)

echo "closure: $profile, $root, ${#paths[@]} store paths, $(nix path-info -S "$root" | awk '{print $2}') bytes"
printf '%-34s %8s %8s %9s %12s\n' what seconds ratio "peak MiB" "blob bytes"
printf '%-34s %8.2f\n' "floor: tar | sha256sum" "$f_none"
printf '%-34s %8.2f %8s %9s %12s\n' "floor: tar | pigz -6 -p2 | sha256" "$f_gzip" "" "" "$pigz_bytes"
printf '%-34s %8.2f\n' "floor: tar | zstd -3 -T2 | sha256" "$f_zstd"
for c in gzip zstd none; do
    rm -rf "$work/oci"
    read -r t rss < <(time_of "$bin build --store-path $root --no-cache --compression $c -o oci:$work/oci --json > $work/out.json")
    bytes=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(l["blob"]["size"] for l in d["layers"]))' "$work/out.json")
    case $c in gzip) f=$f_gzip ;; zstd) f=$f_zstd ;; none) f=$f_none ;; esac
    printf '%-34s %8.2f %8.2f %9.1f %12s\n' "nixoci build --compression $c" "$t" "$(echo "$t / $f" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$bytes"
done
# Warm: the image is already in the layout and the layer cache is filled.
export XDG_CACHE_HOME=$work/cache
rm -rf "$work/oci"
"$bin" build --store-path "$root" -o "oci:$work/oci" --json >/dev/null
read -r t rss < <(time_of "$bin build --store-path $root -o oci:$work/oci --json > $work/out.json")
printf '%-34s %8.2f %8.2f %9.1f\n' "nixoci warm rebuild (gzip)" "$t" "$(echo "$t / $f_gzip" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
# An edit to the application: a new root over the same dependencies, into
# the same layout with the cache filled by the builds above.
variant=$("$make_closure" "$profile" --variant $((RANDOM % 1000 + 1)))
read -r t_cold_ref _ < <(time_of "$bin build --store-path $root --no-cache -o oci:$work/cold-ref --json > /dev/null")
read -r t rss < <(time_of "$bin build --store-path $variant -o oci:$work/oci --json > $work/variant.json")
printf '%-34s %8.2f %8.2f %9.1f   (ratio to a cold gzip build: %.3f)\n' "nixoci after an edit (variant)" "$t" "$(echo "$t / $f_gzip" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$(echo "$t / $t_cold_ref" | bc -l)"
echo "gzip blobs / pigz bytes: $(python3 -c "
import json; d=json.load(open('$work/out.json')); print(round(sum(l['blob']['size'] for l in d['layers'])/$pigz_bytes, 3))")"
