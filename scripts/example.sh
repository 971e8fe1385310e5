#!/usr/bin/env bash
# The main job on the bundled examples: build fixtures/flakes/hello with
# nixoci straight into containerd (starting nixoci's private containerd if
# none answers) and run it with runc through `ctr run` (it also writes an OCI
# layout that skopeo inspects); then run the Kurtosis-style package
# fixtures/packages/hello-web in an enclave and end with the page its web
# service serves. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo build --release --locked --quiet
nixoci=$PWD/target/release/nixoci
work=$(mktemp -d)
enclave=example-$$
trap '"$nixoci" enclave rm -f "$enclave" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
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

# The package: its NixBuildSpec images are built natively, imported into
# containerd, and its services run in an enclave with its own network.
cp -r fixtures/packages/hello-web "$work/hello-web"
mkdir -p "$work/hello-web/nix/bb" && cp /bin/busybox "$work/hello-web/nix/bb/busybox"
"$nixoci" run "$work/hello-web" --enclave "$enclave" >/dev/null
"$nixoci" enclave inspect "$enclave"
echo "the page web serves, fetched by the client service by name (and from the host: $("$nixoci" port print "$enclave" web http)):"
"$nixoci" service exec "$enclave" client -- wget -qO- http://web:8080/
