#!/bin/bash
# Installs or removes rackd; run through `make install` / `make uninstall` (docs/service.md).
#
#   PREFIX      installation prefix (default /usr/local)
#   DESTDIR     staging root for packagers: files go to $DESTDIR$PREFIX/..., nothing on the
#               running system is touched (no group creation, no systemctl)
#   BINDIR_SRC  directory holding the built rackd and rackctl (install only)
#
# The configuration goes to /etc/rackd/rackd.toml whatever the prefix, because that is where
# rackd looks by default; an existing file is never overwritten, and uninstall keeps it unless
# it is still the unedited default.
set -euo pipefail

action=${1:-}
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
here=$(cd "$(dirname "$0")" && pwd)

unit_dir=$PREFIX/lib/systemd/system
sysusers_dir=$PREFIX/lib/sysusers.d
config_dir=/etc/rackd
config=$config_dir/rackd.toml

# Every installed file but the configuration: "mode path".
files() {
    cat <<EOF
0755 $PREFIX/sbin/rackd
0755 $PREFIX/bin/rackctl
0644 $unit_dir/rackd.service
0644 $sysusers_dir/rackd.conf
0644 $PREFIX/share/man/man1/rackctl.1
0644 $PREFIX/share/bash-completion/completions/rackctl
0644 $PREFIX/share/zsh/site-functions/_rackctl
0644 $PREFIX/share/fish/vendor_completions.d/rackctl.fish
EOF
}

# Writes the content of installed file $1 to stdout.
content() {
    local rackctl=$BINDIR_SRC/rackctl
    case $1 in
        */sbin/rackd) cat "$BINDIR_SRC/rackd" ;;
        */bin/rackctl) cat "$rackctl" ;;
        */rackd.service)
            # The unit names /usr/local/sbin/rackd; point it at this prefix.
            sed "s#^ExecStart=/usr/local/sbin/rackd#ExecStart=$PREFIX/sbin/rackd#" \
                "$here/rackd.service" ;;
        */rackd.conf) cat "$here/rackd.sysusers" ;;
        */rackctl.1) "$rackctl" man ;;
        */completions/rackctl) "$rackctl" completions bash ;;
        */_rackctl) "$rackctl" completions zsh ;;
        */rackctl.fish) "$rackctl" completions fish ;;
        *) echo "install.sh: no content for $1" >&2; return 1 ;;
    esac
}

# Whether this installs onto the running system (not into a staging root).
live() { [ -z "$DESTDIR" ]; }
systemd_running() { live && [ -d /run/systemd/system ]; }

create_group() {
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers "$sysusers_dir/rackd.conf"
    elif ! getent group rackd >/dev/null; then
        groupadd --system rackd
    fi
}

do_install() {
    : "${BINDIR_SRC:?set BINDIR_SRC to the directory holding the built rackd and rackctl}"
    for bin in rackd rackctl; do
        if [ ! -x "$BINDIR_SRC/$bin" ]; then
            echo "install.sh: no $bin in $BINDIR_SRC: build it first (cargo build --release)" >&2
            exit 1
        fi
    done
    local mode path
    staged=$(mktemp)
    trap 'rm -f "$staged"' EXIT
    while read -r mode path; do
        content "$path" >"$staged"
        install -D -m "$mode" "$staged" "$DESTDIR$path"
    done < <(files)
    if [ -e "$DESTDIR$config" ]; then
        echo "install.sh: keeping the existing $DESTDIR$config"
    else
        install -D -m 0644 "$here/rackd.toml" "$DESTDIR$config"
    fi
    if live; then
        create_group
    fi
    if systemd_running; then
        systemctl daemon-reload
        echo "install.sh: start rackd with: systemctl enable --now rackd"
    fi
}

do_uninstall() {
    if systemd_running && systemctl is-enabled --quiet rackd.service 2>/dev/null; then
        systemctl disable --now rackd.service
    elif systemd_running; then
        systemctl stop rackd.service 2>/dev/null || true
    fi
    local mode path
    while read -r mode path; do
        rm -f "$DESTDIR$path"
    done < <(files)
    if [ -e "$DESTDIR$config" ]; then
        if cmp -s "$here/rackd.toml" "$DESTDIR$config"; then
            rm -f "$DESTDIR$config"
        else
            echo "install.sh: keeping the edited $DESTDIR$config"
        fi
    fi
    rmdir "$DESTDIR$config_dir" 2>/dev/null || true
    if systemd_running; then
        systemctl daemon-reload
    fi
    # The rackd group stays: files elsewhere may belong to it.
}

case $action in
    install) do_install ;;
    uninstall) do_uninstall ;;
    *) echo "usage: $0 install|uninstall (see docs/service.md)" >&2; exit 2 ;;
esac
