#!/usr/bin/env bash
# What can be checked of the Dockerfile without a Docker engine (docs/container.md):
#
#  1. The Dockerfile runs what this script checks: packaging/build.sh in its build stage, the
#     package lists in its devel and runtime stages, a numeric non-root user.
#  2. The build stage's commands, on this machine's Debian 12: packaging/build.sh configures
#     with the image's flags (CPU variant; --full builds both variants), and every library
#     and tool CMake found comes from packaging/build-packages.txt or what those depend on.
#  3. The runtime stage's packages: every shared library the binary needs (ELF NEEDED) is
#     owned by a package of packaging/runtime-packages.txt (CUDA's by
#     runtime-packages-cuda.txt), and every package listed owns one of them.
#
# Without --full, step 3 looks at the binary of the build ctest runs in (the image builds the
# same sources with the same build type), unless that is a sanitizer build.
# With --full (scripts/container-check), both variants are built and installed into staging
# roots exactly as the image's build stage does, and their binaries are checked and run.
set -euo pipefail
: "${AD_SOURCE_DIR:?}" "${AD_BUILD_DIR:?}"
full=
[ "${1:-}" = --full ] && full=1
for tool in dpkg-query apt-cache readelf ldd cmake; do
    command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed"; exit 77; }
done
src=$AD_SOURCE_DIR
work=$AD_BUILD_DIR/container-check
rm -rf "$work"
mkdir -p "$work"
status=0
failures=0
fail() {
    echo "FAIL: $*"
    status=1
    failures=$((failures + 1))
}
list() { grep '^[a-z]' "$1"; }

# ---- 1. the Dockerfile runs what is checked here ----
dockerfile=$src/Dockerfile
for line in 'RUN /src/packaging/build.sh /src /build /stage "$VARIANT" "$REVISION"' \
            'COPY packaging/build-packages.txt /tmp/packaging/' \
            'COPY packaging/build-packages-cuda.txt /tmp/packaging/' \
            'COPY packaging/runtime-packages.txt /tmp/packaging/' \
            'COPY packaging/runtime-packages-cuda.txt /tmp/packaging/' \
            'COPY --from=build /stage/ /' \
            'FROM devel-${VARIANT} AS build' \
            'FROM runtime-${VARIANT} AS anomalyd' \
            'USER 65532:65532'; do
    grep -qxF -- "$line" "$dockerfile" || fail "the Dockerfile lacks: $line"
done
[ "$(grep '^FROM ' "$dockerfile" | tail -1)" = 'FROM runtime-${VARIANT} AS anomalyd' ] ||
    fail "the daemon is not the Dockerfile's last (default) stage"
[ "$(grep '^USER ' "$dockerfile" | tail -1)" = 'USER 65532:65532' ] || fail "the image runs as root"
# The image's default config listens on every interface: the line its sed rewrites is there.
grep -qxF '    listen: 127.0.0.1:9476' "$src/config/anomalyd.yaml" ||
    fail "config/anomalyd.yaml lacks the listen line the Dockerfile rewrites"

# ---- helpers ----
# The Debian package that owns a file, whether dpkg knows it under /lib or /usr/lib (merged
# /usr), by its own path or the path its links resolve to. Every path is looked up in one
# dpkg-query run (it takes most of a second each), then owner() reads the answers.
declare -A owners_of
candidates() {
    local c
    for c in "$1" "$(readlink -f "$1")"; do
        echo "$c"
        case $c in
        /usr/*) echo "${c#/usr}" ;;
        *) echo "/usr$c" ;;
        esac
    done
}
look_up() {
    local paths=() line
    mapfile -t paths < <(for p in "$@"; do candidates "$p"; done | sort -u)
    while IFS= read -r line; do
        # "libcurl4:amd64: /usr/lib/x86_64-linux-gnu/libcurl.so.4"
        owners_of[${line#*: }]=$(echo "${line%%: *}" | sed 's/:[a-z0-9]*$//; s/, .*//')
    done < <(dpkg-query -S "${paths[@]}" 2>/dev/null | grep -v '^diversion')
}
owner() {
    local c
    for c in $(candidates "$1"); do
        if [ -n "${owners_of[$c]:-}" ]; then
            echo "${owners_of[$c]}"
            return
        fi
    done
}

# ---- 2. the build stage ----
configure_check() {
    local variant=$1 dir=$work/$1 log=$work/$1.log before=$failures
    local args=("$src" "$dir/build" "$dir/stage" "$variant" "container-check")
    if [ -z "$full" ]; then
        "$src/packaging/build.sh" --configure-only "${args[@]}" >"$log" 2>&1 ||
            { cat "$log"; fail "packaging/build.sh --configure-only ($variant) failed"; return; }
    else
        "$src/packaging/build.sh" "${args[@]}" >"$log" 2>&1 ||
            { tail -40 "$log"; fail "packaging/build.sh ($variant) failed"; return; }
    fi
    local want=OFF
    [ "$variant" = cuda ] && want=ON
    grep -qF "anomalyd CUDA backend: $want" "$log" || fail "$variant: the CUDA backend is not $want"
    # What CMake found: libraries through pkg-config, simdjson's package config, the tools.
    local cache=$dir/build/CMakeCache.txt found
    found=$(sed -n -e 's/^pkgcfg_lib_[A-Za-z0-9_]*:FILEPATH=//p' \
                   -e 's/^simdjson_DIR:PATH=//p' \
                   -e 's/^CMAKE_C_COMPILER:[A-Z]*=//p' -e 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' \
                   -e 's/^CMAKE_MAKE_PROGRAM:[A-Z]*=//p' \
                   -e 's/^PKG_CONFIG_EXECUTABLE:[A-Z]*=//p' -e 's/^CMAKE_COMMAND:INTERNAL=//p' \
                   "$cache")
    [ "$(echo "$found" | wc -l)" -ge 10 ] || fail "$variant: found too little in $cache"
    local pkg path
    mapfile -t paths < <(echo "$found")
    look_up "${paths[@]}"
    while read -r path; do
        [ -n "$path" ] || continue
        pkg=$(owner "$path")
        if [ -z "$pkg" ]; then
            # Here the CUDA toolkit is not installed from packages: the image's comes from
            # packaging/build-packages-cuda.txt, which this machine cannot check.
            case $path in /usr/local/cuda*) continue ;; esac
            fail "$variant: $path belongs to no package"
        elif ! grep -qxF "$pkg" <<<"$build_closure"; then
            fail "$variant: $path comes from $pkg, which packaging/build-packages.txt does not bring"
        fi
    done <<<"$found"
    if [ "$failures" -eq "$before" ]; then
        echo "ok: $variant configures with the image's flags; $(echo "$found" | wc -l)" \
            "libraries and tools, all from the build packages"
    fi
}

# ---- 3. the runtime stage ----
needed_check() {
    local binary=$1 variant=$2 before=$failures
    local needed lib path pkg owners=""
    needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]/\1/p')
    [ -n "$needed" ] || { fail "$binary needs no shared library?"; return; }
    if grep -qE '^lib(a|ub|l|t)san\.so' <<<"$needed"; then
        # A sanitizer build links with --no-as-needed, so it names libraries it never uses
        # (libevent_pthreads, libcublasLt): not what the image's build needs. The normal
        # build's run of this test checks it.
        echo "note: $binary is a sanitizer build; its shared libraries are not the image's"
        return
    fi
    local cuda_list=""
    if "$binary" --version | grep -q "CUDA backend built"; then
        cuda_list=$(list "$src/packaging/runtime-packages-cuda.txt")
    fi
    local loaded paths=()
    loaded=$(ldd "$binary")
    for lib in $needed; do
        path=$(awk -v l="$lib" '$1 == l && $3 ~ /^\// { print $3 }' <<<"$loaded")
        [ -n "$path" ] || path=$(awk -v l="$lib" '$1 ~ "/"l"$" { print $1 }' <<<"$loaded")
        [ -n "$path" ] && paths+=("$path")
    done
    look_up "${paths[@]}"
    for lib in $needed; do
        case $lib in
        libcublas.so.* | libcublasLt.so.*)
            pkg=libcublas-@CUDA@
            grep -qxF "$pkg" <<<"$cuda_list" ||
                fail "$lib ($variant) is not covered by packaging/runtime-packages-cuda.txt"
            owners+="$pkg"$'\n'
            continue ;;
        esac
        path=$(awk -v l="$lib" '$1 == l && $3 ~ /^\// { print $3 }' <<<"$loaded")
        [ -n "$path" ] || path=$(awk -v l="$lib" '$1 ~ "/"l"$" { print $1 }' <<<"$loaded")
        [ -n "$path" ] || { fail "$lib: not found by the loader"; continue; }
        pkg=$(owner "$path")
        [ -n "$pkg" ] || { fail "$lib ($path) belongs to no package"; continue; }
        owners+="$pkg"$'\n'
        grep -qxF "$pkg" <(list "$src/packaging/runtime-packages.txt") ||
            fail "$lib comes from $pkg, which packaging/runtime-packages.txt lacks"
    done
    # Nothing listed that the binary does not need.
    for pkg in $(list "$src/packaging/runtime-packages.txt") $cuda_list; do
        grep -qxF "$pkg" <<<"$owners" || fail "$pkg is listed but owns none of $binary's libraries"
    done
    if [ "$failures" -eq "$before" ]; then
        echo "ok: $binary ($variant): $(echo "$needed" | wc -w) shared libraries, all from" \
            "the runtime packages"
    fi
}

build_closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances $(list "$src/packaging/build-packages.txt") 2>/dev/null |
    grep '^[a-z]' | sort -u)
[ -n "$build_closure" ] || fail "apt-cache knows none of packaging/build-packages.txt"

if [ -z "$full" ]; then
    configure_check cpu
    needed_check "$AD_BUILD_DIR/anomalyd" "this build"
else
    variants=(cpu)
    if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null; then
        variants+=(cuda)
    else
        echo "note: no nvcc here; the cuda variant is not built"
    fi
    for v in "${variants[@]}"; do
        configure_check "$v"
        stage=$work/$v/stage
        [ -x "$stage/usr/bin/anomalyd" ] || { fail "$v: nothing installed in $stage"; continue; }
        needed_check "$stage/usr/bin/anomalyd" "$v"
        "$stage/usr/bin/anomalyd" --version
        sed 's/^    listen: 127.0.0.1:9476$/    listen: ":9476"/' \
            "$stage/etc/anomalyd/anomalyd.yaml" >"$work/$v/image.yaml"
        "$stage/usr/bin/anomalyd" --check-config -c "$work/$v/image.yaml" ||
            fail "$v: the image's config does not check"
        grep -qF 'listen: ":9476"' "$work/$v/image.yaml" || fail "$v: the listen line was not rewritten"
    done
fi
if [ "$status" -eq 0 ]; then
    echo "ok: what a machine without Docker can check of the Dockerfile holds"
fi
exit "$status"
