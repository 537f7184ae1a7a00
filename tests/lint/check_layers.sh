#!/usr/bin/env bash
# Folders are layers, and includes point down only (docs/architecture.md). From the bottom:
#
#   base < config < windows < stream < gpu < detect < daemon
#
# A file may include its own folder and the folders below it, always by folder
# ("base/log.h"), never one above, and never by a bare name that hides the crossing.
# tests/, bench/ and cmake/ sit beside the layers and may include any of them.
set -euo pipefail
: "${AD_SOURCE_DIR:?}"
cd "$AD_SOURCE_DIR"
layers=(base config windows stream gpu detect daemon)
declare -A rank
for i in "${!layers[@]}"; do rank[${layers[$i]}]=$i; done

status=0
for layer in "${layers[@]}"; do
    mine=${rank[$layer]}
    while IFS= read -r file; do
        lineno=0
        while IFS= read -r line; do
            lineno=$((lineno + 1))
            [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]] || continue
            target=${BASH_REMATCH[1]}
            folder=${target%%/*}
            if [ "$folder" = "$target" ]; then
                [ -e "$layer/$target" ] && {
                    echo "$file:$lineno: includes \"$target\" without its folder (\"$layer/$target\")"
                    status=1
                }
                continue
            fi
            theirs=${rank[$folder]:-}
            if [ -z "$theirs" ]; then
                echo "$file:$lineno: includes \"$target\", which is in no layer"
                status=1
            elif [ "$theirs" -gt "$mine" ]; then
                echo "$file:$lineno: $layer/ includes $folder/ (\"$target\"), a layer above it"
                status=1
            elif [ ! -e "$target" ] && [ ! -e "$target.in" ]; then
                # (base/version.h is generated from base/version.h.in)
                echo "$file:$lineno: includes \"$target\", which does not exist"
                status=1
            fi
        done <"$file"
    done < <(git ls-files --cached --others --exclude-standard "$layer/*.c" "$layer/*.h" \
        "$layer/*.cu" "$layer/*.cpp")
done
[ "$status" -ne 0 ] || echo "ok: every include points down (${layers[*]})"
exit "$status"
