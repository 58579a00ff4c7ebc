#!/bin/bash
# Builds a Debian package of rackd from built binaries; run through `make deb` (docs/service.md).
#
#   BINDIR_SRC  directory holding the built rackd and rackctl
#   OUT         directory the .deb is written to
#   COMPRESS    dpkg-deb compression (default xz; the tests use none)
#
# The package holds what `make install PREFIX=/usr` installs: the same file list (install.sh),
# with /etc/rackd/rackd.toml as a conffile. Installing it creates the rackd group and reloads
# systemd; it does not start rackd (`systemctl enable --now rackd` does, once configured).
set -euo pipefail
: "${BINDIR_SRC:?set BINDIR_SRC to the directory holding the built rackd and rackctl}"
: "${OUT:?set OUT to the directory for the package}"
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT

DESTDIR=$stage PREFIX=/usr BINDIR_SRC=$BINDIR_SRC bash "$here/install.sh" install >/dev/null
mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: rackd
Version: $version
Architecture: $arch
Maintainer: rackd developers <rackd@example.invalid>
Installed-Size: $size
Depends: libc6, nftables, systemd
Section: net
Priority: optional
Description: keeps TCP connections alive across outages and address changes
 rackd intercepts new TCP connections through netfilter; when the other end runs rackd too
 it monitors them, holds the local socket open while the path is down, and splices the
 connection onto the new path when it returns, without touching the programs.
CONTROL
echo /etc/rackd/rackd.toml >"$stage/DEBIAN/conffiles"
cat >"$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers /usr/lib/sysusers.d/rackd.conf
    elif ! getent group rackd >/dev/null; then
        groupadd --system rackd
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi
SCRIPT
cat >"$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl disable --now rackd.service || true
fi
SCRIPT
cat >"$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p "$OUT"
deb=$OUT/rackd_${version}_${arch}.deb
dpkg-deb --root-owner-group -Z"${COMPRESS:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb"
