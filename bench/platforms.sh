#!/usr/bin/env bash
# Benchmark: a two-platform build (x86_64 natively, aarch64 under qemu)
# against the two single-platform builds of the same flake, in the same
# run. The flake's app refers to an architecture-independent data path
# (200 MB of base64 text), whose layer the two platforms share.
#
#   bench/platforms.sh
#
# Every row starts with an empty layer cache and a new layout, after the
# outputs are built by Nix (so the rows time nixoci's own work).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
cargo build --release --locked --quiet
bin=$PWD/target/release/nixoci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flake=$work/flake
mkdir -p "$flake/bb" "$flake/bb-arm64" "$flake/data"
cp /bin/busybox "$flake/bb/"
cp "$(scripts/busybox-arm64.sh)" "$flake/bb-arm64/busybox"
# Deterministic pseudo-random text (base64 of an AES-CTR stream keyed by
# the part number): the same store path on every run, compressing as text.
for i in $(seq 1 100); do
    { openssl enc -aes-128-ctr -pass "pass:part-$i" -nosalt -pbkdf2 < /dev/zero 2>/dev/null || true; } |
        head -c 1500000 | base64 > "$flake/data/part-$i.txt"
done
cat > "$flake/flake.nix" <<'NIX'
{
  outputs = { self }:
    let
      data = builtins.path { path = ./data; name = "shared-data"; };
      app = system: bbdir:
        let bb = builtins.path { path = bbdir; name = "busybox"; };
        in derivation {
          name = "bench-app";
          inherit system;
          builder = "${bb}/busybox";
          args = [ "sh" "-c" "${bb}/busybox mkdir -p $out/bin && echo ${data} > $out/data-path" ];
        };
    in {
      packages.x86_64-linux.default = app "x86_64-linux" ./bb;
      packages.aarch64-linux.default = app "aarch64-linux" ./bb-arm64;
    };
}
NIX
# Realise both outputs first (not timed).
"$bin" build "$flake" --system x86_64-linux --system aarch64-linux -o "oci:$work/warm" >/dev/null 2>&1

time_of() {
    rm -rf "$work/cache" "$work/oci"
    /usr/bin/time -f '%e %M' -o "$work/time" env XDG_CACHE_HOME="$work/cache" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    cat "$work/time"
}
read -r amd rss1 < <(time_of "$bin" build "$flake" --system x86_64-linux -o "oci:$work/oci")
read -r arm rss2 < <(time_of "$bin" build "$flake" --system aarch64-linux -o "oci:$work/oci")
read -r both rss3 < <(time_of "$bin" build "$flake" --system x86_64-linux --system aarch64-linux -o "oci:$work/oci")
blobs=$(du -sb "$work/oci/blobs" | cut -f1)
printf '%-40s %8s %8s %9s\n' what seconds ratio "peak MiB"
printf '%-40s %8.2f %8s %9d\n' "x86_64-linux alone" "$amd" "" $((rss1 / 1024))
printf '%-40s %8.2f %8s %9d\n' "aarch64-linux alone" "$arm" "" $((rss2 / 1024))
printf '%-40s %8.2f %8.2f %9d\n' "both, one index (ratio to the sum)" "$both" "$(echo "$both / ($amd + $arm)" | bc -l)" $((rss3 / 1024))
echo "layout of both: $blobs bytes of blobs"
