#!/usr/bin/env bash
# package.sh — builds synod's Debian package: the `synod` and `synodctl` binaries, the systemd
# unit (packaging/synod.service: Type=notify, hardened, as the user `synod`), an example
# /etc/synod/synod.toml (a conffile), the documentation, and the maintainer scripts
# (packaging/debian: the user and /var/lib/synod at install; nothing is started). Prints the
# package's path as its last line.
#
#   scripts/package.sh                                 release build, then the package
#   SYNOD_PACKAGE_BINARIES=DIR scripts/package.sh      package DIR/synod and DIR/synodctl as
#                                                      they are (no build; the tests use this)
#   SYNOD_PACKAGE_OUT=DIR                              where the .deb goes
#                                                      (default $CARGO_TARGET_DIR/package)
#
# Needs dpkg-deb (Debian's dpkg). Install with `dpkg -i`; then edit /etc/synod/synod.toml, issue
# certificates (`synod certs`), `synod check-config --config /etc/synod/synod.toml`, and
# `systemctl enable --now synod` (docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
if [ -n "${SYNOD_PACKAGE_BINARIES:-}" ]; then
    bins=$SYNOD_PACKAGE_BINARIES
else
    cargo build --release --locked --workspace --bins >&2
    bins=$CARGO_TARGET_DIR/release
fi
out=${SYNOD_PACKAGE_OUT:-$CARGO_TARGET_DIR/package}
mkdir -p "$out"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
# Stripped: the debug information stays in the build (a package carries the program only).
install -D -s -m 0755 "$bins/synod" "$root/usr/bin/synod"
install -D -s -m 0755 "$bins/synodctl" "$root/usr/bin/synodctl"
install -D -m 0644 packaging/synod.service "$root/lib/systemd/system/synod.service"
install -D -m 0640 packaging/synod.toml "$root/etc/synod/synod.toml"
install -d -m 0750 "$root/etc/synod/certs"
doc="$root/usr/share/doc/synod"
install -D -m 0644 README.md "$doc/README.md"
for f in docs/*.md; do
    install -D -m 0644 "$f" "$doc/$(basename "$f")"
done
# `synod --help` is the manual: every flag, its SYNOD_* variable, its default.
"$bins/synod" --help > "$doc/synod-help.txt"

mkdir -p "$root/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/postrm packaging/debian/prerm "$root/DEBIAN/"
echo /etc/synod/synod.toml > "$root/DEBIAN/conffiles"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: synod
Version: $version
Architecture: $arch
Maintainer: synod developers <synod@localhost>
Installed-Size: $size
Depends: libc6, passwd
Section: net
Priority: optional
Homepage: https://github.com/synod/synod
Description: Raft-replicated coordination service speaking the ZooKeeper protocol
 synod keeps a hierarchical tree of znodes with sessions, ephemeral and sequential nodes,
 watches and multi-op transactions, replicated by Raft and logged in RocksDB, and serves it
 over the ZooKeeper client protocol (TLS by default) with HTTPS admin endpoints. This package
 holds the server (synod), the command-line client (synodctl) and a systemd unit.
CONTROL

deb="$out/synod_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
