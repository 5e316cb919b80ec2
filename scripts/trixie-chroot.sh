#!/bin/sh
# Build (once) and print the path of a Debian trixie chroot holding Orthanc 1.12.x,
# orthanc-python 5.x and pydicom, so the test suite can run on a second Orthanc version.
# The chroot is cached outside the repository, keyed by its package list; delete the
# folder to rebuild it.
set -eu
PACKAGES="orthanc,orthanc-python,orthanc-postgresql,python3-pydicom,ca-certificates"
KEY=$(printf '%s' "trixie:$PACKAGES:v1" | sha256sum | cut -c1-12)
CACHE=${CONSISTENT_ANON_CACHE:-/var/cache/consistent-anon}
DIR="$CACHE/trixie-$KEY"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -f "$DIR/.complete" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
        apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
    rm -rf "$DIR.tmp"
    mkdir -p "$CACHE"
    echo "building trixie chroot in $DIR (a few minutes, once)" >&2
    debootstrap --variant=minbase --include="$PACKAGES" trixie "$DIR.tmp" "$MIRROR" >&2
    chroot "$DIR.tmp" Orthanc --version >&2
    touch "$DIR.tmp/.complete"
    rm -rf "$DIR"
    mv "$DIR.tmp" "$DIR"
fi
# Orthanc asks for this machine's name for every UID it generates: without the name in the
# chroot's hosts file each one becomes a DNS query, which can wait seconds on a closed network.
grep -qw "$(hostname)" "$DIR/etc/hosts" 2>/dev/null || printf '127.0.0.1\t%s\n' "$(hostname)" >> "$DIR/etc/hosts"
echo "$DIR"
