#!/bin/sh
# Installs mcu-updater on Raspberry Pi OS / Debian, or upgrades it: run it again with a newer source.
#
#   sudo contrib/install.sh [--root DIR] [SOURCE]      install or upgrade
#   sudo contrib/install.sh [--root DIR] --uninstall [--purge]
#
# SOURCE is a wheel (mcu_updater-*.whl) or a source tree; the default is the tree this script is in.
# The configuration, unit and udev rule always come from the tree this script is in.
# --root DIR installs into a root filesystem being built (pi-gen, debootstrap): Python, pip, useradd
# run inside it with chroot, so DIR needs python3-venv and must run on this CPU (or under qemu-user).
# --uninstall removes the program, unit and udev rule but keeps configuration, state, firmware and the
# user; --purge removes those too.
# Every step prints one line. Nothing is changed that is already as it should be.
set -eu

PREFIX=/opt/mcu-updater
VENV=$PREFIX/venv
STAMP=$VENV/.installed-from
ETC=/etc/mcu-updater
CONFIG=$ETC/mcu-updater.yaml
UNIT=/etc/systemd/system/mcu-updater.service
WANTS=/etc/systemd/system/multi-user.target.wants/mcu-updater.service
RULES=/etc/udev/rules.d/99-mcu-updater.rules
LINK=/usr/local/bin/mcu-updater
USER_NAME=mcu-updater
STATE=/var/lib/mcu-updater
DEFAULT_FIRMWARE=/usr/share/mcu-updater/firmware

TREE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=/
ACTION=install
PURGE=no
SOURCE=

say() { printf 'mcu-updater install: %s\n' "$*"; }
die() {
    printf 'mcu-updater install: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit "$1"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root)
            [ $# -ge 2 ] || die "--root needs a directory"
            ROOT=$2
            shift 2
            ;;
        --root=*)
            ROOT=${1#--root=}
            shift
            ;;
        --uninstall) ACTION=uninstall && shift ;;
        --purge) PURGE=yes && shift ;;
        -h | --help) usage 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [ -z "$SOURCE" ] || die "one SOURCE only (see --help)"
            SOURCE=$1
            shift
            ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run it as root (sudo $0)"
[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT=$(cd "$ROOT" && pwd)
[ "$PURGE" = no ] || [ "$ACTION" = uninstall ] || die "--purge goes with --uninstall"

# $R/path is path inside the target root ("" for the running system).
if [ "$ROOT" = / ]; then R=; else R=$ROOT; fi

in_root() {
    if [ -z "$R" ]; then "$@"; else chroot "$R" "$@"; fi
}

# Systemd manages the target only when it is this running system and systemd is PID 1.
systemd_running() { [ -z "$R" ] && [ -d /run/systemd/system ]; }
udev_running() { [ -z "$R" ] && [ -S /run/udev/control ] && command -v udevadm >/dev/null; }

# --- install steps ---------------------------------------------------------------------------------

source_stamp() {
    if [ -f "$SOURCE" ]; then
        sha256sum <"$SOURCE" | cut -d' ' -f1
    else
        (cd "$SOURCE" && find pyproject.toml mcu_updater -type f ! -path '*/__pycache__/*' | LC_ALL=C sort |
            xargs sha256sum | sha256sum | cut -d' ' -f1)
    fi
}

install_venv() {
    if [ -z "$SOURCE" ]; then SOURCE=$TREE; fi
    [ -f "$SOURCE" ] || [ -f "$SOURCE/pyproject.toml" ] || die "$SOURCE is neither a wheel nor a source tree"
    want=$(source_stamp)
    if [ -x "$R$VENV/bin/mcu-updater" ] && [ "$(cat "$R$STAMP" 2>/dev/null)" = "$want" ]; then
        say "venv $VENV: unchanged"
        return
    fi
    in_root python3 -c 'import ensurepip, venv' 2>/dev/null ||
        die "python3 with venv is missing in $ROOT: apt install python3-venv (and python3-dev gcc on 32-bit)"
    staging=$PREFIX/.source
    rm -rf "$R$staging"
    mkdir -p "$R$staging"
    if [ -f "$SOURCE" ]; then
        cp "$SOURCE" "$R$staging/"
        target=$staging/$(basename "$SOURCE")
    else
        tar -C "$SOURCE" --exclude=.venv --exclude=.git --exclude=__pycache__ --exclude='*.egg-info' \
            --exclude=build -cf - . | tar -C "$R$staging" -xf -
        target=$staging
    fi
    # A venv is not relocatable, so it is built in place; the old one comes back if that fails.
    rm -rf "$R$VENV.old"
    if [ -d "$R$VENV" ]; then mv "$R$VENV" "$R$VENV.old"; fi
    if in_root python3 -m venv "$VENV" &&
        in_root "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-warn-script-location "$target"; then
        rm -rf "$R$VENV.old" "$R$staging"
        echo "$want" >"$R$STAMP"
        say "venv $VENV: installed $(in_root "$VENV/bin/mcu-updater" --version)"
        CHANGED=yes
        return
    fi
    rm -rf "$R$VENV" "$R$staging"
    if [ -d "$R$VENV.old" ]; then mv "$R$VENV.old" "$R$VENV"; fi
    die "installing into $VENV failed (see pip's output above); the previous installation is unchanged"
}

in_group() { grep -Eq "^$1:[^:]*:[^:]*:(.*,)?$2(,|\$)" "$R/etc/group"; }
has_group() { grep -q "^$1:" "$R/etc/group"; }

install_user() {
    for group in dialout gpio; do
        if has_group "$group"; then
            say "group $group: exists"
        else
            in_root groupadd --system "$group"
            say "group $group: created (Raspberry Pi OS has it; plain Debian does not)"
        fi
    done
    if grep -q "^$USER_NAME:" "$R/etc/passwd"; then
        if in_group dialout "$USER_NAME" && in_group gpio "$USER_NAME"; then
            say "user $USER_NAME: exists, in dialout and gpio"
        else
            in_root usermod --append --groups dialout,gpio "$USER_NAME"
            say "user $USER_NAME: added to dialout and gpio"
        fi
    else
        in_root useradd --system --user-group --groups dialout,gpio --home-dir "$STATE" --no-create-home \
            --shell /usr/sbin/nologin --comment "mcu-updater service" "$USER_NAME"
        say "user $USER_NAME: created, in dialout and gpio"
    fi
}

# install_file SOURCE DEST MODE: sets WROTE=yes if DEST changed.
# (Functions report through variables: `set -e` does not apply inside a function called in a condition.)
install_file() {
    WROTE=no
    if cmp -s "$1" "$R$2"; then
        say "$2: unchanged"
        return
    fi
    if [ -e "$R$2" ]; then verb=updated; else verb=installed; fi
    install -D -o root -g root -m "$3" "$1" "$R$2"
    WROTE=yes
    say "$2: $verb"
}

install_config() {
    if [ ! -e "$R$CONFIG" ]; then
        install_file "$TREE/config/mcu-updater.yaml" "$CONFIG" 0644
    elif cmp -s "$TREE/config/mcu-updater.yaml" "$R$CONFIG"; then
        say "$CONFIG: unchanged"
    else
        say "$CONFIG: yours, kept"
        install_file "$TREE/config/mcu-updater.yaml" "$CONFIG.dist" 0644
    fi
}

# The directories the configuration lists under firmware: (relative ones start at its directory).
firmware_dirs() {
    in_root "$VENV/bin/python" - "$CONFIG" <<'EOF'
import sys
from pathlib import Path

import yaml

path = Path(sys.argv[1])
try:
    entries = yaml.safe_load(path.read_text()).get("firmware") or []
except (OSError, yaml.YAMLError, AttributeError):
    entries = []
for entry in [entries] if isinstance(entries, str) else entries:
    if isinstance(entry, str) and not entry.endswith(".zip"):
        print(path.parent / entry)
EOF
}

install_firmware_dirs() {
    dirs=$(firmware_dirs)
    [ -n "$dirs" ] || dirs=$DEFAULT_FIRMWARE
    echo "$dirs" | while IFS= read -r dir; do
        if [ -d "$R$dir" ]; then
            say "$dir: exists"
        else
            install -d -o root -g root -m 0755 "$R$dir"
            say "$dir: created (put the nrfutil .zip packages here)"
        fi
    done
}

install_link() {
    if [ "$(readlink "$R$LINK" 2>/dev/null)" = "$VENV/bin/mcu-updater" ]; then
        say "$LINK: unchanged"
    else
        mkdir -p "$R$(dirname "$LINK")"
        ln -sfn "$VENV/bin/mcu-updater" "$R$LINK"
        say "$LINK: linked to $VENV/bin/mcu-updater"
    fi
}

reload_udev() {
    if udev_running; then
        udevadm control --reload
        udevadm trigger --subsystem-match=gpio --subsystem-match=tty
        say "udev: rules reloaded"
    else
        say "udev: not running here; the rule applies at the next boot"
    fi
}

# Sets CONFIG_OK: the service exits 78 on a configuration error, so it is started only with a valid one.
check_config() {
    CONFIG_OK=yes
    verdict=$(in_root "$VENV/bin/mcu-updater" check-config "$CONFIG" 2>&1) || CONFIG_OK=no
    say "check-config: $verdict"
}

enable_service() {
    if systemd_running; then
        systemctl daemon-reload
        if [ "$CONFIG_OK" = no ]; then
            systemctl --quiet enable mcu-updater
            say "service: enabled, not started: fix $CONFIG, then systemctl start mcu-updater"
            return
        fi
        if [ "$CHANGED" = yes ] && systemctl --quiet is-active mcu-updater; then
            systemctl restart mcu-updater || die "the service did not restart: journalctl -u mcu-updater -n 20"
            say "service: restarted on the new installation"
        fi
        systemctl --quiet enable --now mcu-updater ||
            die "the service did not start: journalctl -u mcu-updater -n 20, and mcu-updater doctor"
        say "service: enabled and started (systemctl status mcu-updater)"
        return
    fi
    if [ -L "$R$WANTS" ]; then
        say "service: enabled"
    elif command -v systemctl >/dev/null; then
        systemctl --quiet --root="$ROOT" enable mcu-updater.service
        say "service: enabled"
    else
        say "service: systemctl missing; run: systemctl enable mcu-updater"
    fi
    say "service: systemd is not running here; it starts at the next boot (or: systemctl start mcu-updater)"
}

do_install() {
    CHANGED=no
    install_venv
    install_user
    install_config
    install_firmware_dirs
    install_link
    install_file "$TREE/contrib/99-mcu-updater.rules" "$RULES" 0644
    if [ "$WROTE" = yes ]; then reload_udev; fi
    install_file "$TREE/systemd/mcu-updater.service" "$UNIT" 0644
    if [ "$WROTE" = yes ]; then CHANGED=yes; fi
    check_config
    enable_service
    say "done; check the gateway with: mcu-updater doctor"
}

# --- uninstall -------------------------------------------------------------------------------------

remove() {
    for path in "$@"; do
        if [ -e "$R$path" ] || [ -L "$R$path" ]; then
            rm -rf "$R$path"
            say "$path: removed"
        fi
    done
}

do_uninstall() {
    if [ -e "$R$UNIT" ]; then
        if systemd_running; then
            systemctl --quiet disable --now mcu-updater
        else
            systemctl --quiet --root="$ROOT" disable mcu-updater.service
        fi
        say "service: disabled"
    fi
    remove "$UNIT" "$RULES" "$PREFIX"
    if systemd_running; then systemctl daemon-reload; fi
    if [ "$(readlink "$R$LINK" 2>/dev/null)" = "$VENV/bin/mcu-updater" ]; then remove "$LINK"; fi
    if [ "$PURGE" = yes ]; then
        remove "$ETC" "$STATE" "/var/lib/private/mcu-updater" "$(dirname "$DEFAULT_FIRMWARE")"
        if grep -q "^$USER_NAME:" "$R/etc/passwd"; then
            in_root userdel "$USER_NAME"
            say "user $USER_NAME: removed"
        fi
    else
        say "kept: $ETC, $STATE, the firmware directory and user $USER_NAME (--purge removes them)"
    fi
    say "done"
}

if [ "$ACTION" = install ]; then do_install; else do_uninstall; fi
