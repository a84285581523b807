#!/bin/sh
# Builds an image FROM scratch holding the given programs and exactly the shared libraries they
# load (found with ldd, including the dynamic loader), and imports it into one dockerd. Used for
# calico-node: its agent binary first, plus any tools wanted inside (e.g. `ip` for debugging;
# the Docker driver itself plumbs endpoints over rtnetlink and needs none).
#
# usage: images/calico-node/build.sh DOCKER_SOCKET [TAG [ENTRYPOINT_BINARY [EXTRA_BINARY...]]]
#   TAG defaults to calico-rs/node:latest, ENTRYPOINT_BINARY to target/debug/calico-node.
# The first binary becomes the entrypoint; every binary is installed under /bin by base name.
set -eu
sock=${1:?usage: build.sh DOCKER_SOCKET [TAG [ENTRYPOINT_BINARY [EXTRA_BINARY...]]]}
tag=${2:-calico-rs/node:latest}
shift
[ $# -ge 1 ] && shift
[ $# -ge 1 ] || set -- "$(dirname "$0")/../../target/debug/calico-node"
[ -x "$1" ] || { echo "no executable at $1 (for calico-node: cargo build --bin calico-node)" >&2; exit 1; }
entry=$(basename "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/run" "$root/var/run/calico" "$root/var/lib/calico" \
    "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
copy_with_parents() {
    # Keep the library's absolute path (the loader and the binaries' RUNPATHs expect it).
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
}
for bin in "$@"; do
    [ -x "$bin" ] || { echo "$bin is not an executable" >&2; exit 1; }
    cp -L "$bin" "$root/bin/$(basename "$bin")"
    # ldd lines: "libx.so => /path (0x..)", "/lib64/ld-linux-x86-64.so.2 (0x..)", "linux-vdso...".
    for lib in $(ldd "$bin" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
        [ -e "$root$lib" ] || copy_with_parents "$lib"
    done
done
echo 'root:x:0:0:root:/:/bin/nologin' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .
docker -H "unix://$sock" import \
    -c 'ENV PATH=/bin' -c "ENTRYPOINT [\"/bin/$entry\"]" \
    -m "calico-rs image FROM scratch: $*" \
    "$work/rootfs.tar" "$tag" >/dev/null
echo "$tag"
