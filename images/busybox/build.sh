#!/bin/sh
# Builds the busybox test image FROM scratch out of Debian's busybox-static and imports it into
# one dockerd: a root filesystem with /bin/busybox and one symlink per applet, PATH=/bin and
# CMD sh. No base image, no registry, no shell needed inside the image at build time.
#
# usage: images/busybox/build.sh DOCKER_SOCKET [TAG]    (TAG defaults to busybox:latest)
set -eu
sock=${1:?usage: build.sh DOCKER_SOCKET [TAG]}
tag=${2:-busybox:latest}
bin=${BUSYBOX:-/bin/busybox}
[ -x "$bin" ] || bin=/usr/bin/busybox
[ -x "$bin" ] || { echo "busybox-static is not installed" >&2; exit 1; }
# The binary must be static: the image has no libc.
if ! "$bin" ls >/dev/null 2>&1 || ldd "$bin" >/dev/null 2>&1; then
    echo "$bin is not a static busybox (install busybox-static)" >&2; exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$bin" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .
docker -H "unix://$sock" import \
    -c 'ENV PATH=/bin' -c 'CMD ["sh"]' \
    -m "calico-rs busybox test image (FROM scratch, busybox-static)" \
    "$work/rootfs.tar" "$tag" >/dev/null
echo "$tag"
