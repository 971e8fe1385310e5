#!/usr/bin/env bash
# The reference SBOM validators, from PyPI, in a virtualenv of their own:
# cyclonedx-python-lib (its strict JSON validator) and spdx-tools
# (pyspdxtools). Prints the virtualenv's bin directory. Installs once.
set -euo pipefail
venv="${NIXOCI_VALIDATORS:-${XDG_CACHE_HOME:-$HOME/.cache}/nixoci-test/validators}"
mkdir -p "$(dirname "$venv")"
# One install at a time (tests may ask in parallel).
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/python" -c 'import cyclonedx.validation.json, spdx_tools' 2>/dev/null; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check \
        'cyclonedx-python-lib[json-validation]==11.*' 'spdx-tools==0.8.*' >&2
fi
echo "$venv/bin"
