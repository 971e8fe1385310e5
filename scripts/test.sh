#!/usr/bin/env bash
# Run the whole test suite: formatting, lints, unit and integration tests
# against real Nix, umoci and skopeo. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
