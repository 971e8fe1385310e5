#!/usr/bin/env bash
# The main job on the bundled example: build fixtures/flakes/hello with
# nixoci straight into containerd (starting nixoci's private containerd if
# none answers), then run it with runc through `ctr run`. It also writes an
# OCI layout that skopeo inspects. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo build --release --locked --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Outside the checkout, with busybox beside the flake (Nix would ignore an
# untracked file inside the git checkout).
cp -r fixtures/flakes/hello "$work/flake"
mkdir -p "$work/flake/bb" && cp /bin/busybox "$work/flake/bb/busybox"

"$nixoci" build "$work/flake" --tag hello:example --output containerd --output "oci:$work/oci"
skopeo inspect "oci:$work/oci:example" | grep -E '"(Digest|Architecture)"'

# The containerd nixoci used: the first that answers, as nixoci chooses it.
home=${NIXOCI_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/nixoci}
for addr in ${CONTAINERD_ADDRESS:-} "$home/containerd/containerd.sock" \
    ${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/containerd/containerd.sock} /run/containerd/containerd.sock; do
    ctr --address "$addr" version >/dev/null 2>&1 && break
done
echo "running docker.io/library/hello:example with ctr (containerd at $addr):"
ctr --address "$addr" --namespace "${CONTAINERD_NAMESPACE:-default}" run --rm docker.io/library/hello:example "nixoci-example-$$"
