#!/usr/bin/env bash
# Rewrite fixtures/golden/digests.json from the current code: run this only
# after a change that is meant to change image bytes, and say why in the
# commit.
set -euo pipefail
cd "$(dirname "$0")/.."
NIXOCI_REGENERATE_GOLDEN=1 cargo test --locked --test golden -- --nocapture
git diff --stat fixtures/golden/digests.json
