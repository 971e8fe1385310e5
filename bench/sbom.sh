#!/usr/bin/env bash
# Benchmark: the cost of an image's SBOM and provenance (the three documents
# made from the closure), over repeated runs, beside the cost of reading the
# closure from Nix in the same run.
#
#   bench/sbom.sh [small|medium|large] [RUNS]     (default: medium, 50)
. "$(dirname "$0")/common.sh"
trap 'rm -rf "$work"' EXIT
cargo bench --locked --quiet --bench sbom -- "$root" "${2:-50}"
