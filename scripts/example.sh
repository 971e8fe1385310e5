#!/usr/bin/env bash
# Build the bundled example flake (fixtures/flakes/hello) into an OCI layout
# with nixoci, check it with skopeo, unpack it with umoci and run its
# entrypoint in a chroot. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo build --release --locked --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Outside the checkout, with busybox beside the flake (Nix would ignore an
# untracked file inside the git checkout).
cp -r fixtures/flakes/hello "$work/flake"
mkdir -p "$work/flake/bb" && cp /bin/busybox "$work/flake/bb/busybox"

./target/release/nixoci build "$work/flake" --tag hello:example --output "oci:$work/oci" --output "docker-archive:$work/hello.tar"
skopeo inspect "oci:$work/oci:example" | grep -E '"(Digest|Architecture)"'
umoci unpack --image "$work/oci:example" "$work/bundle" >/dev/null
if [ "$(id -u)" = 0 ]; then
    echo "running the image's entrypoint:"
    chroot "$work/bundle/rootfs" /bin/hello
else
    echo "(run as root to chroot into the unpacked image)"
fi
