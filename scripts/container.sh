#!/usr/bin/env bash
# container.sh — builds the synod container image (packaging/container/Containerfile) with podman
# from the Debian package that scripts/package.sh makes, and prints the image's name as its last
# line.
#
#   scripts/container.sh                                 package a release build, then the image
#   SYNOD_PACKAGE_BINARIES=DIR scripts/container.sh      package DIR/synod and DIR/synodctl
#   SYNOD_IMAGE=NAME                                     the image's name (default synod:<version>)
#
# The image starts FROM debian:bookworm-slim. Where no registry can be reached (this project's
# test machines reach only Debian's mirror), the base image is made once with debootstrap from
# SYNOD_DEBIAN_MIRROR (default http://deb.debian.org/debian) and imported under that name.
#
# `podman` also needs what scripts/podman-env.sh sets (a runtime and limits that work on this
# kind of machine); this script sources it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/synod/target}"
# shellcheck source=scripts/podman-env.sh
. scripts/podman-env.sh

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image=${SYNOD_IMAGE:-synod:$version}
base=debian:bookworm-slim

if ! podman image exists "$base" && ! podman pull -q "docker.io/library/$base" >/dev/null 2>&1; then
    echo "== no registry: making $base with debootstrap" >&2
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" \
        "${SYNOD_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import -q - "localhost/$base" >&2
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx" ${rootfs:+"$rootfs"}' EXIT
SYNOD_PACKAGE_OUT="$ctx" scripts/package.sh >/dev/null
cp packaging/container/Containerfile "$ctx/"
podman build -q -t "$image" -f "$ctx/Containerfile" "$ctx" >&2
echo "$image"
