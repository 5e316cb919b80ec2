#!/bin/sh
# Build (once) and print the path of a Debian chroot holding that release's Orthanc,
# orthanc-python, the PostgreSQL plugin, pydicom and cryptography, so the test suite runs on more
# Orthanc versions than the host's: `scripts/debian-chroot.sh trixie` (Orthanc 1.12.x) or
# `scripts/debian-chroot.sh sid` (1.13.x). Each chroot is cached outside the repository,
# keyed by its release and package list; delete the folder to rebuild it.
set -eu
SUITE=${1:?usage: debian-chroot.sh trixie|sid}
# python3-cffi-backend is named: python3-cryptography needs it through a virtual package, which
# debootstrap does not resolve.
PACKAGES="orthanc,orthanc-python,orthanc-postgresql,python3-pydicom,python3-cryptography,python3-cffi-backend,ca-certificates"
KEY=$(printf '%s' "$SUITE:$PACKAGES:v1" | sha256sum | cut -c1-12)
CACHE=${CONSISTENT_ANON_CACHE:-/var/cache/consistent-anon}
DIR="$CACHE/$SUITE-$KEY"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -f "$DIR/.complete" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
    rm -rf "$DIR.tmp"
    mkdir -p "$CACHE"
    echo "building the $SUITE chroot in $DIR (a few minutes, once)" >&2
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$DIR.tmp" "$MIRROR" >&2
    # sid's Release file can be older than this machine's clock: let apt inside accept it.
    echo 'Acquire::Check-Valid-Until "false";' > "$DIR.tmp/etc/apt/apt.conf.d/99no-check-valid-until"
    chroot "$DIR.tmp" Orthanc --version >&2
    touch "$DIR.tmp/.complete"
    rm -rf "$DIR"
    mv "$DIR.tmp" "$DIR"
fi
# Orthanc asks for this machine's name for every UID it generates: without the name in the
# chroot's hosts file each one becomes a DNS query, which can wait seconds on a closed network.
grep -qw "$(hostname)" "$DIR/etc/hosts" 2>/dev/null || printf '127.0.0.1\t%s\n' "$(hostname)" >> "$DIR/etc/hosts"
echo "$DIR"
