#!/usr/bin/env bash
# Interpret Kurtosis packages with nixoci, as `kurtosis run --dry-run` would,
# and report for each: its commit, whether it interprets unmodified, how
# many instructions its plan has and which packages it read (with their
# commits). Nothing runs: no containerd is needed.
#
#   scripts/survey.sh [--nixoci BIN] PACKAGE[=ARGS_FILE] ...
#
# PACKAGE is a directory or a locator (github.com/OWNER/REPO[/PATH][@REF]);
# remote packages are fetched with git, so the caller's git configuration
# applies (a mirror through url.<base>.insteadOf, for example). ARGS_FILE is
# a JSON or YAML file of package arguments. The packages surveyed are not
# ours: keep them outside this repository.
set -uo pipefail
nixoci=${NIXOCI:-nixoci}
if [ "${1:-}" = "--nixoci" ]; then nixoci=$2; shift 2; fi
[ $# -gt 0 ] || { sed -n '2,14p' "$0"; exit 2; }
printf '%s\t%s\t%s\t%s\t%s\n' package commit result instructions detail
status=0
for spec in "$@"; do
  pkg=${spec%%=*}
  args=()
  [ "$spec" != "$pkg" ] && args=(--args-file "${spec#*=}")
  commit=-
  if [ -d "$pkg" ] && git -C "$pkg" rev-parse HEAD >/dev/null 2>&1; then
    commit=$(git -C "$pkg" rev-parse --short=12 HEAD)
  fi
  out=$(mktemp) err=$(mktemp)
  if "$nixoci" run "$pkg" --dry-run --json "${args[@]}" >"$out" 2>"$err"; then
    read -r n deps first < <(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
deps = ",".join(x["source"] + ("@" + x["commit"][:12] if x.get("commit") and "@" not in x["source"] else "") for x in p["packages"][1:]) or "-"
first = p["packages"][0].get("commit", "")[:12]
print(len(p["steps"]), deps, first or "-")' "$out")
    [ "$commit" = - ] && commit=$first
    printf '%s\t%s\t%s\t%s\t%s\n' "$pkg" "$commit" interprets "$n" "reads: $deps"
  else
    status=1
    printf '%s\t%s\t%s\t%s\t%s\n' "$pkg" "$commit" FAILS - "$(grep -m1 . "$err" | cut -c1-300)"
  fi
  rm -f "$out" "$err"
done
exit $status
