#!/usr/bin/env bash
# Benchmark: a closure built and imported into containerd with unpack, cold
# (a fresh containerd) and warm, against nixoci writing a docker-archive and
# `ctr images import` (which unpacks) of it, in the same run.
#
#   bench/containerd.sh [small|medium|large]     (default: medium)
. "$(dirname "$0")/common.sh"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# start_containerd NAME: a private containerd under $work/NAME, its socket
# $work/NAME/sock (not run in a subshell, so its pid is kept for cleanup).
start_containerd() {
    local d=$work/$1
    mkdir -p "$d"
    cat > "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/sock"
TOML
    containerd --config "$d/config.toml" > "$d/log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do ctr -a "$d/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
}
export XDG_CACHE_HOME=$work/cache NIXOCI_HOME=$work/home
tar -cf - $(nix-store -qR "$root") 2>/dev/null > /dev/null # warm the page cache

start_containerd base
a=$work/base/sock
read -r t_base _ < <(time_of "$bin build --store-path $root --no-cache -o docker-archive:$work/img.tar && ctr -a $a -n bench images import $work/img.tar")
start_containerd cold
b=$work/cold/sock
# Cold: a fresh containerd and an empty layer cache.
read -r t_cold rss < <(time_of "$bin build --store-path $root --containerd-address $b -o containerd:bench")
read -r t_warm rss_w < <(time_of "$bin build --store-path $root --containerd-address $b -o containerd:bench")
ctr -a "$b" -n bench run --rm docker.io/library/closure-$profile:latest check true 2>/dev/null || true

echo "closure: $profile, $root, $(nix path-info -S "$root" | awk '{print $2}') bytes"
printf '%-58s %8s %8s %9s\n' what seconds ratio "peak MiB"
printf '%-58s %8.2f\n' "baseline: nixoci -> docker-archive + ctr images import" "$t_base"
printf '%-58s %8.2f %8.2f %9.1f\n' "nixoci -> containerd, unpacked, cold" "$t_cold" "$(echo "$t_cold / $t_base" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
printf '%-58s %8.2f %8.2f %9.1f\n' "nixoci -> containerd, warm (nothing changed)" "$t_warm" "$(echo "$t_warm / $t_base" | bc -l)" "$(echo "$rss_w / 1024" | bc -l)"
