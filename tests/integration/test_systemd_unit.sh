#!/usr/bin/env bash
# systemd/anomalyd.service passes `systemd-analyze verify` without a single diagnostic, and
# keeps the settings docs/operations.md promises.
set -euo pipefail

command -v systemd-analyze >/dev/null || { echo "skipped: systemd-analyze is not installed"; exit 77; }
: "${AD_SOURCE_DIR:?}" "${AD_BUILD_DIR:?}"
unit="$AD_SOURCE_DIR/systemd/anomalyd.service"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# verify checks that the executables exist, so point them at the build.
verify() {
    sed "s#/usr/bin/anomalyd#$AD_BUILD_DIR/anomalyd#g" "$1" > "$tmp/anomalyd.service"
    local out
    if ! out=$(systemd-analyze verify "$tmp/anomalyd.service" 2>&1); then
        echo "$out"
        return 1
    fi
    # Bad values are only warnings (exit 0): any line about the unit is a failure.
    if grep -F "anomalyd.service" <<<"$out"; then
        return 1
    fi
}

verify "$unit"

# The check above must be able to fail: a typo that systemd only warns about.
sed 's/^Type=notify$/Type=notfy/' "$unit" > "$tmp/broken.service"
if verify "$tmp/broken.service" >/dev/null; then
    echo "verify did not catch Type=notfy"
    exit 1
fi

require() {
    grep -qxF -- "$1" "$unit" || { echo "$unit lacks: $1"; exit 1; }
}
require "Type=notify"
require 'ExecReload=/bin/kill -HUP $MAINPID'
require "ExecStart=/usr/bin/anomalyd -c /etc/anomalyd/anomalyd.yaml"
require "ExecStartPre=/usr/bin/anomalyd --check-config -c /etc/anomalyd/anomalyd.yaml"
require "WatchdogSec=30s"
require "RestartPreventExitStatus=2"
require "User=anomalyd"
require "NoNewPrivileges=yes"
require "ProtectSystem=strict"
require "ProtectHome=yes"
require "PrivateTmp=yes"
require "CapabilityBoundingSet="
require "SystemCallFilter=@system-service"

# The unit's stop timeout must leave room for the daemon's own bound.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
default_bound=$("$AD_BUILD_DIR/tests/tools/config-reference" | grep -F '| `shutdown_timeout` |' |
                sed -n 's/.*| `\([0-9]*\)s` |.*/\1/p')
[ -n "$stop" ] && [ -n "$default_bound" ] || { echo "cannot read the timeouts"; exit 1; }
if [ "$stop" -le "$default_bound" ]; then
    echo "TimeoutStopSec=${stop}s is not above daemon.shutdown_timeout (${default_bound}s)"
    exit 1
fi
echo "ok: unit verified; TimeoutStopSec=${stop}s > shutdown_timeout ${default_bound}s"
