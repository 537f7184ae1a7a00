#!/usr/bin/env bash
# `cmake --install` of this build into a staging root (DESTDIR) with the /usr prefix, and the
# .deb CPack makes of the same rules (docs/deployment-systemd.md):
#
#  * the files land where systemd and the docs say: the binary, the unit (the checked-in one,
#    byte for byte, under /usr), sysusers.d and tmpfiles.d entries, /etc/anomalyd/anomalyd.yaml,
#    the docs and the trainer; the installed binary runs and accepts the installed config;
#  * systemd-sysusers and systemd-tmpfiles, run on the staging root, create the user, the state
#    folders with their owner and mode, and make the config 0640 root:anomalyd;
#  * installing again keeps an edited config; another prefix gets a unit naming its paths;
#  * the .deb holds the same files, marks the config as a conffile, depends on the runtime
#    package list, and its maintainer scripts are valid shell that run sysusers and tmpfiles.
set -euo pipefail
: "${AD_SOURCE_DIR:?}" "${AD_BUILD_DIR:?}"
for tool in systemd-sysusers systemd-tmpfiles dpkg-deb cpack; do
    command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}

root=$tmp/root
DESTDIR=$root cmake --install "$AD_BUILD_DIR" --prefix /usr >"$tmp/install.log" ||
    { cat "$tmp/install.log"; fail "cmake --install failed"; }

expected="/etc/anomalyd/anomalyd.yaml
/usr/bin/anomalyd
/usr/lib/systemd/system/anomalyd.service
/usr/lib/sysusers.d/anomalyd.conf
/usr/lib/tmpfiles.d/anomalyd.conf
/usr/share/anomalyd/train/anomalyd_train.py
/usr/share/anomalyd/train/feedback_marks.py
/usr/share/anomalyd/train/safetensors_io.py"
got=$(cd "$root" && find . -type f ! -path './usr/share/doc/*' | sed 's#^\.##' | sort)
[ "$got" = "$expected" ] || fail "installed files differ:"$'\n'"$(diff <(echo "$expected") <(echo "$got"))"
for doc in README.md config.md operations.md deployment-systemd.md deployment-kubernetes.md \
           container.md examples/full.yaml; do
    [ -f "$root/usr/share/doc/anomalyd/$doc" ] || fail "missing /usr/share/doc/anomalyd/$doc"
done
cmp -s "$AD_SOURCE_DIR/systemd/anomalyd.service" "$root/usr/lib/systemd/system/anomalyd.service" ||
    fail "the installed unit differs from systemd/anomalyd.service"
"$root/usr/bin/anomalyd" --version | grep -q '^anomalyd ' || fail "the installed binary does not run"
"$root/usr/bin/anomalyd" --check-config -c "$root/etc/anomalyd/anomalyd.yaml" >/dev/null ||
    fail "the installed config does not check"
[ "$(stat -c %a "$root/etc/anomalyd/anomalyd.yaml")" = 640 ] || fail "the config is not 0640"

# sysusers and tmpfiles, as the .deb's postinst and the boot run them, on the staging root.
systemd-sysusers --root="$root" >"$tmp/sysusers.log" 2>&1 || { cat "$tmp/sysusers.log"; fail "sysusers"; }
grep -q '^anomalyd:x:[0-9]*:[0-9]*:[^:]*:/var/lib/anomalyd:' "$root/etc/passwd" ||
    fail "systemd-sysusers made no user anomalyd"
uid=$(awk -F: '$1 == "anomalyd" { print $3 }' "$root/etc/passwd")
systemd-tmpfiles --root="$root" --create >"$tmp/tmpfiles.log" 2>&1 ||
    { cat "$tmp/tmpfiles.log"; fail "systemd-tmpfiles"; }
for dir in /var/lib/anomalyd /var/lib/anomalyd/models /var/lib/anomalyd/exports; do
    [ "$(stat -c '%u %a' "$root$dir")" = "$uid 750" ] || fail "$dir: $(stat -c '%u %a' "$root$dir")"
done
[ "$(stat -c '%u %g %a' "$root/etc/anomalyd/anomalyd.yaml")" = "0 $uid 640" ] ||
    fail "the config is not 0640 root:anomalyd: $(stat -c '%u %g %a' "$root/etc/anomalyd/anomalyd.yaml")"

# An edited config survives a reinstall (an upgrade by hand).
echo "# edited" >>"$root/etc/anomalyd/anomalyd.yaml"
DESTDIR=$root cmake --install "$AD_BUILD_DIR" --prefix /usr >"$tmp/install2.log"
grep -q '^# edited$' "$root/etc/anomalyd/anomalyd.yaml" || fail "a reinstall overwrote the config"
grep -q 'Keeping: .*/etc/anomalyd/anomalyd.yaml' "$tmp/install2.log" || fail "no 'Keeping' line"

# Another prefix: the unit and tmpfiles name that prefix's paths.
DESTDIR=$tmp/local cmake --install "$AD_BUILD_DIR" --prefix /opt/ad >"$tmp/install3.log"
unit=$tmp/local/opt/ad/lib/systemd/system/anomalyd.service
grep -qxF 'ExecStart=/opt/ad/bin/anomalyd -c /opt/ad/etc/anomalyd/anomalyd.yaml' "$unit" ||
    fail "the /opt/ad unit: $(grep ExecStart= "$unit")"
[ -f "$tmp/local/opt/ad/etc/anomalyd/anomalyd.yaml" ] || fail "no config under /opt/ad/etc"
grep -q '^z /opt/ad/etc/anomalyd/anomalyd.yaml ' "$tmp/local/opt/ad/lib/tmpfiles.d/anomalyd.conf" ||
    fail "tmpfiles does not name /opt/ad/etc"

# The .deb.
(cd "$AD_BUILD_DIR" && cpack -G DEB -B "$tmp/deb" >"$tmp/cpack.log" 2>&1) ||
    { cat "$tmp/cpack.log"; fail "cpack failed"; }
deb=$(ls "$tmp"/deb/anomalyd_*.deb)
in_deb=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $6 }' | sed 's#^\.##' |
         grep -v '^/usr/share/doc/' | sort)
[ "$in_deb" = "$expected" ] || fail "the .deb's files differ:"$'\n'"$(diff <(echo "$expected") <(echo "$in_deb"))"
dpkg-deb -e "$deb" "$tmp/control"
[ "$(cat "$tmp/control/conffiles")" = /etc/anomalyd/anomalyd.yaml ] || fail "conffiles"
depends=$(dpkg-deb -f "$deb" Depends | sed 's/, /\n/g')
for pkg in $(grep '^[a-z]' "$AD_SOURCE_DIR/packaging/runtime-packages.txt"); do
    grep -qxF "$pkg" <<<"$depends" || fail "Depends lacks $pkg: $depends"
done
if "$AD_BUILD_DIR/anomalyd" --version | grep -q "CUDA backend built"; then
    grep -qxE "libcublas-[0-9]+-[0-9]+" <<<"$depends" || fail "Depends lacks cuBLAS: $depends"
fi
for script in postinst prerm postrm; do
    sh -n "$tmp/control/$script" || fail "$script is not valid shell"
done
grep -q 'systemd-sysusers anomalyd.conf' "$tmp/control/postinst" || fail "postinst: sysusers"
grep -q 'systemd-tmpfiles --create anomalyd.conf' "$tmp/control/postinst" || fail "postinst: tmpfiles"
echo "ok: installed and packaged as documented ($(basename "$deb"))"
