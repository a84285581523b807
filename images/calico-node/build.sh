#!/bin/sh
# Builds the calico-node image FROM scratch out of our own calico-node binary and imports it
# into one dockerd. The binary is dynamically linked against glibc, so the libraries `ldd`
# names are copied in beside it: nothing else is in the image (no shell, no package manager).
#
# usage: images/calico-node/build.sh DOCKER_SOCKET [TAG] [BINARY]
#   TAG defaults to calico-rs/node:latest, BINARY to target/debug/calico-node.
set -eu
sock=${1:?usage: build.sh DOCKER_SOCKET [TAG] [BINARY]}
tag=${2:-calico-rs/node:latest}
bin=${3:-$(dirname "$0")/../../target/debug/calico-node}
[ -x "$bin" ] || { echo "no calico-node binary at $bin (cargo build --bin calico-node)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/tmp" "$root/var/run/calico" "$root/var/lib/calico" "$root/proc" "$root/sys" "$root/dev" "$root/run"
chmod 1777 "$root/tmp"
cp "$bin" "$root/bin/calico-node"
# Every shared library the binary loads, at the same path (the loader included).
for lib in $(ldd "$bin" | awk '/=>/ { print $3 } /^\t\// { print $1 }'); do
    [ -f "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .
docker -H "unix://$sock" import \
    -c 'ENV PATH=/bin' -c 'ENTRYPOINT ["/bin/calico-node"]' \
    -m "calico-rs calico-node (FROM scratch)" \
    "$work/rootfs.tar" "$tag" >/dev/null
echo "$tag"
