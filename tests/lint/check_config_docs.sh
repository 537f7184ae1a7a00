#!/usr/bin/env bash
# The key reference in docs/config.md is what the schema tables generate (scripts/gen-docs
# rewrites it), so no key goes undocumented and no documented default is stale.
set -euo pipefail
: "${AD_SOURCE_DIR:?}" "${AD_BUILD_DIR:?}"
doc="$AD_SOURCE_DIR/docs/config.md"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed -n '/^<!-- BEGIN GENERATED REFERENCE -->$/,/^<!-- END GENERATED REFERENCE -->$/p' "$doc" |
    sed '1d;$d' > "$tmp"
[ -s "$tmp" ] || { echo "$doc has no generated reference between the markers"; exit 1; }
if ! diff -u "$tmp" <("$AD_BUILD_DIR/tests/tools/config-reference"); then
    echo "docs/config.md is out of date: run scripts/gen-docs"
    exit 1
fi
echo "ok: docs/config.md matches the schema"
