#!/usr/bin/env bash
# Run the whole test suite: formatting, lints, unit and integration tests
# against real Nix, umoci and skopeo. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
# The SBOM validators (PyPI), installed once, before the tests run in parallel.
scripts/validators.sh >/dev/null
# Debian's busybox-static for arm64 (the multi-platform fixtures), fetched once.
scripts/busybox-arm64.sh >/dev/null

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

# The fast tier, first: in process, no daemon (layering of the crate, unit
# tests, interpretation tables, golden digests, property tests).
cargo test --locked --lib --test architecture --test interpret --test golden --test properties

# A bounded fuzzing run (20 s per target) of the readers of outside input.
scripts/fuzz.sh 20

# Everything, against real Nix, containerd, runc, registries, skopeo, umoci.
cargo test --locked
