#!/usr/bin/env bash
# Benchmark: a closure pushed to a local docker-registry, cold (empty
# registry and layer cache) and warm (nothing changed), against
# `skopeo copy oci:... docker://...` of the same image into another empty
# registry, in the same run.
#
#   bench/registry.sh [small|medium|large]     (default: medium)
. "$(dirname "$0")/common.sh"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# start_registry NAME PORT: a private docker-registry under $work/NAME.
start_registry() {
    local d=$work/$1
    mkdir -p "$d"
    cat > "$d/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $d/data
http:
  addr: 127.0.0.1:$2
YML
    docker-registry serve "$d/config.yml" > "$d/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$2") 2>/dev/null && break; sleep 0.1; done
}
export XDG_CACHE_HOME=$work/cache NIXOCI_HOME=$work/home
# warm the page cache (through cat: GNU tar reads nothing when it writes to /dev/null itself)
tar -cf - $(nix-store -qR "$root") 2>/dev/null | cat > /dev/null

start_registry ours 5702
# The baseline pushes the very image nixoci makes, from an OCI layout.
"$bin" build --store-path "$root" --no-cache -o "oci:$work/layout" --tag "closure:1" >/dev/null 2>&1
# Every row starts with the writes of the one before it on disk (sync), so
# that no row pays for another's write-back. The cold pushes, skopeo's and
# nixoci's, each to a new empty registry, three times in turns; the ratio
# is of their medians.
bases=(); pushes=(); rss_ps=()
for i in 1 2 3; do
    start_registry "base$i" $((5710 + i))
    start_registry "fresh$i" $((5720 + i))
    sync
    read -r t _ < <(time_of "skopeo copy --dest-tls-verify=false oci:$work/layout:1 docker://127.0.0.1:$((5710 + i))/closure:1")
    bases+=("$t")
    sync
    read -r t r < <(time_of "$bin push --insecure oci:$work/layout 127.0.0.1:$((5720 + i))/closure:1")
    pushes+=("$t"); rss_ps+=("$r")
done
t_base=$(median "${bases[@]}")
t_pushc=$(median "${pushes[@]}")
rss_p=$(median "${rss_ps[@]}")
sync
read -r t_base_w _ < <(time_of "skopeo copy --dest-tls-verify=false oci:$work/layout:1 docker://127.0.0.1:5711/closure:1")
sync
rm -rf "$XDG_CACHE_HOME"
sync
read -r t_cold rss < <(time_of "$bin build --store-path $root --insecure -o registry:127.0.0.1:5702/closure:1")
sync
read -r t_warm rss_w < <(time_of "$bin build --store-path $root --insecure -o registry:127.0.0.1:5702/closure:1")
sync
read -r t_push _ < <(time_of "$bin push --insecure oci:$work/layout 127.0.0.1:5702/pushed:1")

# Pull: the image nixoci pushed (gzip) into a fresh containerd, unpacked,
# by `ctr images pull` and by `nixoci pull`, caches dropped before each.
start_containerd() {
    local d=$work/$1
    mkdir -p "$d"
    printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\n[grpc]\n  address = "%s/sock"\n' "$d" "$d" "$d" > "$d/config.toml"
    containerd --config "$d/config.toml" > "$d/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do ctr -a "$d/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
start_containerd ctrpull
start_containerd ourpull
drop
read -r t_ctrpull _ < <(time_of "ctr -a $work/ctrpull/sock -n bench images pull --plain-http 127.0.0.1:5721/closure:1")
drop
read -r t_pull rss_pull < <(time_of "$bin pull --insecure --containerd-address $work/ourpull/sock --namespace bench 127.0.0.1:5721/closure:1")

echo "closure: $profile, $root, $(nix path-info -S "$root" | awk '{print $2}') bytes"
echo "cold pushes: skopeo ${bases[*]}; nixoci ${pushes[*]} (medians below)"
printf '%-58s %8s %8s %9s\n' what seconds ratio "peak MiB"
printf '%-58s %8.2f\n' "baseline: skopeo copy oci: -> docker://, cold" "$t_base"
printf '%-58s %8.2f\n' "baseline: skopeo copy oci: -> docker://, again (warm)" "$t_base_w"
printf '%-58s %8.2f %8.2f %9.1f\n' "nixoci push oci: -> docker registry, cold" "$t_pushc" "$(echo "$t_pushc / $t_base" | bc -l)" "$(echo "$rss_p / 1024" | bc -l)"
printf '%-58s %8.2f %8.2f %9.1f\n' "nixoci build -> registry, cold (builds the layers too)" "$t_cold" "$(echo "$t_cold / $t_base" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
printf '%-58s %8.2f %8.2f %9.1f\n' "nixoci build -> registry, warm (ratio to skopeo warm)" "$t_warm" "$(echo "$t_warm / $t_base_w" | bc -l)" "$(echo "$rss_w / 1024" | bc -l)"
printf '%-58s %8.2f %8.2f\n' "nixoci push oci: -> other repository (blobs mounted)" "$t_push" "$(echo "$t_push / $t_base" | bc -l)"
printf '%-58s %8.2f\n' "baseline: ctr images pull --plain-http (unpacked)" "$t_ctrpull"
printf '%-58s %8.2f %8.2f %9.1f\n' "nixoci pull (unpacked), ratio to ctr" "$t_pull" "$(echo "$t_pull / $t_ctrpull" | bc -l)" "$(echo "$rss_pull / 1024" | bc -l)"
# For bench/targets.sh: the figures it checks, one "key value" a line.
if [ -n "${BENCH_RESULTS:-}" ]; then
    peak=0
    for r in "${rss_ps[@]}" "$rss" "$rss_w" "$rss_pull"; do
        [ "$r" -gt "$peak" ] && peak=$r
    done
    {
        echo "$profile.push_ratio $(echo "$t_pushc / $t_base" | bc -l)"
        echo "$profile.pull_ratio $(echo "$t_pull / $t_ctrpull" | bc -l)"
        echo "$profile.registry_peak_mib $(echo "$peak / 1024" | bc -l)"
    } >> "$BENCH_RESULTS"
fi
