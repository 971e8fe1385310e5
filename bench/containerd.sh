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
    rm -rf "$work" "${rl:-}"
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
# settle: before each timed run, write out and drop caches, then warm the
# page cache with the closure again. Without it a run pays for the files
# an earlier one deleted: on an ext4 without a journal, creating an inode
# skips those deleted in the last minutes, reading each candidate's inode
# block (seen here: 20 s of system time in `recently_deleted`).
settle() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
    # through cat: GNU tar reads nothing when it writes to /dev/null itself
    tar -cf - $(nix-store -qR "$root") 2>/dev/null | cat > /dev/null
}

# The floor: a plain copy of the closure's files, written out (what any
# unpack must at least do when it copies).
mapfile -t paths < <(nix-store -qR "$root")
# Nothing is deleted between timed runs (each copy, containerd and cache
# is kept until the end): ext4 makes a run that creates inodes soon after
# many were deleted pay for it, whatever the caches hold.
floor_once() {
    settle
    read -r t _ < <(time_of "mkdir $work/cpa$1 && cp -a ${paths[*]} $work/cpa$1/ && sync")
}

start_containerd base
a=$work/base/sock
settle
read -r t_base _ < <(time_of "$bin build --store-path $root --no-cache -o docker-archive:$work/img.tar && ctr -a $a -n bench images import $work/img.tar")
# cold NAME ARGS...: a fresh containerd NAME, settled caches, one timed
# import with ARGS; sets $t and $rss. The layer cache ($work/cache) starts
# empty, and each ARGS gives layers of other digests: every run is cold.
cold() {
    local name=$1
    shift
    start_containerd "$name"
    settle
    read -r t rss < <(time_of "$bin build --store-path $root --containerd-address $work/$name/sock -o containerd:bench $*")
}
# The floor and the default cold import, three times each, in turns: the
# ratio is of their medians (one figure of either varies by 10 % here).
cps=() colds=()
for n in 1 2 3; do
    floor_once "$n"
    cps+=("$t")
    export XDG_CACHE_HOME=$work/cache$n
    cold "cold$n"
    colds+=("$t")
done
t_cp=$(median "${cps[@]}")
t_cold=$(median "${colds[@]}")
rss_c=$rss
b=$work/cold3/sock
read -r t_warm rss_w < <(time_of "$bin build --store-path $root --containerd-address $b -o containerd:bench")
# The same after the cache drop: what a developer's rebuild costs, reading
# nixoci itself from disk too.
settle
read -r t_warm_cold rss_wc < <(time_of "$bin build --store-path $root --containerd-address $b -o containerd:bench")
# One store path changed (the application: make-closure --variant 1).
variant=$("$make_closure" "$profile" --variant 1)
settle
read -r t_var rss_v < <(time_of "$bin build --store-path $variant --containerd-address $b -o containerd:bench")
ctr -a "$b" -n bench run --rm docker.io/library/closure-$profile:latest check true 2>/dev/null || true
NIXOCI_LINK=copy cold copy
t_copy=$t rss_cp=$rss
# Rootless: the same cold import as a user without root, into that user's
# own private engine (rootlesskit, started before the timing), against
# root's copy path just above: the store is root's, so a user's fill copies.
rl_user=nixoci-bench
id -u "$rl_user" >/dev/null 2>&1 || useradd -M -d /nonexistent -s /usr/sbin/nologin -G nix-users "$rl_user"
for f in uid gid; do
    grep -q "^$rl_user:" /etc/sub$f || usermod --add-sub${f}s 3100000000-3100065535 "$rl_user"
done
rl=$(mktemp -d /tmp/nxbench.XXXX)
chmod 755 "$rl"
cp "$bin" "$rl/nixoci"
chown -R "$rl_user" "$rl"
as_user="setpriv --reuid=$rl_user --regid=$(id -g "$rl_user") --init-groups -- env -i HOME=$rl USER=$rl_user PATH=/usr/bin:/bin:/usr/sbin:/sbin NIXOCI_HOME=$rl/h XDG_CACHE_HOME=$rl/cache"
$as_user "$rl/nixoci" engine start >/dev/null
settle
read -r t_rl rss_rl < <(time_of "$as_user $rl/nixoci build --store-path $root -o containerd:bench")
$as_user "$rl/nixoci" engine stop >/dev/null
cold zstd1 --compression zstd
t_z1=$t rss_z1=$rss
cold gzip1 --compression gzip
t_g1=$t rss_g1=$rss
cold gzip6 --compression-level 6
t_g6=$t rss_g6=$rss

echo "closure: $profile, $root, $(nix path-info -S "$root" | awk '{print $2}') bytes"
printf '%-58s %8s %8s %9s\n' what seconds ratio "peak MiB"
printf '%-58s %8.2f\n' "baseline: nixoci -> docker-archive + ctr images import" "$t_base"
row() { printf '%-58s %8.2f %8.2f %9.1f\n' "$1" "$2" "$(echo "$2 / $t_base" | bc -l)" "$(echo "$3 / 1024" | bc -l)"; }
row "nixoci -> containerd, unpacked, cold (default: plain)" "$t_cold" "$rss_c"
row "  same, store files copied (NIXOCI_LINK=copy)" "$t_copy" "$rss_cp"
row "  same, rootless (a user's own engine; copies)" "$t_rl" "$rss_rl"
row "  same, --compression zstd (level 1)" "$t_z1" "$rss_z1"
row "  same, --compression gzip (level 1)" "$t_g1" "$rss_g1"
row "  same, --compression-level 6 (gzip as for registries)" "$t_g6" "$rss_g6"
row "nixoci -> containerd, warm (nothing changed)" "$t_warm" "$rss_w"
row "  same, after the cache drop" "$t_warm_cold" "$rss_wc"
row "  one store path changed, after the cache drop" "$t_var" "$rss_v"
echo
echo "floor runs: ${cps[*]}; cold runs: ${colds[*]} (medians below)"
printf '%-58s %8.2f\n' "floor: cp -a of the closure + sync" "$t_cp"
floor() { printf '%-58s %8.2f %8.2f\n' "$1" "$2" "$(echo "$2 / $t_cp" | bc -l)"; }
floor "nixoci -> containerd, cold (ratio to the floor)" "$t_cold"
floor "  same, store files copied" "$t_copy"
floor "  same, rootless" "$t_rl"
floor "  same, --compression zstd" "$t_z1"
floor "one store path changed, after the cache drop" "$t_var"
floor "warm, after the cache drop" "$t_warm_cold"
printf '%-58s %8s %8.2f\n' "rootless / root copying (goal: at most 1.3)" "" "$(echo "$t_rl / $t_copy" | bc -l)"
# For bench/targets.sh: the figures it checks, one "key value" a line.
if [ -n "${BENCH_RESULTS:-}" ]; then
    peak=0
    for r in "$rss_c" "$rss_cp" "$rss_rl" "$rss_z1" "$rss_g1" "$rss_g6" "$rss_w" "$rss_wc" "$rss_v"; do
        [ "$r" -gt "$peak" ] && peak=$r
    done
    {
        echo "$profile.cold_ratio $(echo "$t_cold / $t_cp" | bc -l)"
        echo "$profile.warm_after_drop $t_warm_cold"
        echo "$profile.one_path_after_drop $t_var"
        echo "$profile.peak_mib $(echo "$peak / 1024" | bc -l)"
    } >> "$BENCH_RESULTS"
fi
