#!/usr/bin/env bash
# Every metric the code registers has a row in docs/operations.md, and every row there names a
# metric the code registers, so the reference an operator reads is the one the daemon serves.
set -euo pipefail
: "${AD_SOURCE_DIR:?}"
cd "$AD_SOURCE_DIR"
in_code=$(grep -rhoE '"anomalyd_[a-z0-9_]+"' base config windows stream gpu detect daemon | tr -d '"' | sort -u)
in_docs=$(grep -oE '^\| `anomalyd_[a-z0-9_]+`' docs/operations.md | grep -oE 'anomalyd_[a-z0-9_]+' |
    sort -u)
[ -n "$in_code" ] || { echo "found no metric names in the sources"; exit 1; }
missing=$(comm -23 <(echo "$in_code") <(echo "$in_docs"))
stale=$(comm -13 <(echo "$in_code") <(echo "$in_docs"))
status=0
if [ -n "$missing" ]; then
    echo "registered but not documented in docs/operations.md:"; echo "$missing"; status=1
fi
if [ -n "$stale" ]; then
    echo "documented in docs/operations.md but not registered:"; echo "$stale"; status=1
fi
[ "$status" -ne 0 ] || echo "ok: $(echo "$in_code" | wc -l) metrics, all documented"
exit "$status"
