#!/bin/sh
# The container image's build stage (Dockerfile), runnable outside a container too:
#
#   packaging/build.sh [--configure-only] SOURCE BUILD STAGE VARIANT [REVISION]
#
# configures SOURCE into BUILD with the image's flags (VARIANT cuda: the CUDA backend is
# required; cpu: left out), builds the daemon, and installs it under the /usr prefix into the
# staging root STAGE, which the runtime stage copies as it is. tests/integration/
# test_container_build.sh runs the configure step here, on this machine's Debian 12.
# CUDA_ARCHITECTURES in the environment (e.g. "80-real;90-real;90-virtual") overrides the
# default compute capabilities (9.0).
set -eu
configure_only=
if [ "${1:-}" = --configure-only ]; then
    configure_only=1
    shift
fi
[ $# -ge 4 ] || { echo "usage: $0 [--configure-only] SOURCE BUILD STAGE cuda|cpu [REVISION]" >&2; exit 2; }
src=$1 build=$2 stage=$3 variant=$4 revision=${5:-} archs=${CUDA_ARCHITECTURES:-}
case $variant in
cuda) cuda=ON ;;
cpu) cuda=OFF ;;
*) echo "$0: VARIANT is cuda or cpu, not $variant" >&2; exit 2 ;;
esac

cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DBUILD_TESTING=OFF -DANOMALYD_CUDA="$cuda" ${revision:+-DANOMALYD_REVISION="$revision"} \
    ${archs:+-DCMAKE_CUDA_ARCHITECTURES="$archs"}
[ -z "$configure_only" ] || exit 0
cmake --build "$build" --target anomalyd -j "$(nproc)"
DESTDIR="$stage" cmake --install "$build" --strip
