#!/bin/sh
# Builds the three images the Helm chart (charts/calico-rs/values.yaml) references, FROM scratch,
# into one dockerd, tagged as the chart's defaults:
#   calico-rs/node:0.1.0              /bin/calico-node (entrypoint), /bin/calicoctl (the probes), /bin/ip
#   calico-rs/cni:0.1.0               /bin/sh and the busybox applets the install-cni init container
#                                     runs (cp, chmod, mv, mkdir, printf, sed), and
#                                     /opt/cni/bin/{calico,calico-ipam,portmap}
#   calico-rs/kube-controllers:0.1.0  /bin/calico-kube-controllers (entrypoint)
# Each image holds its programs and exactly the shared libraries ldd names
# (images/calico-node/build.sh).
#
# usage: images/kubernetes/build.sh DOCKER_SOCKET
# env:   BIN_DIR   where the calico-rs binaries are (default target/debug; build them with
#                  `cargo build -p calico-rs --bins`)
#        VERSION   image tag (default 0.1.0, the chart's default images.*.tag)
#        REGISTRY  repository prefix (default calico-rs, the chart's default images.*.repository)
#        PORTMAP   the portmap CNI plugin (default Debian's /usr/lib/cni/portmap)
set -eu
sock=${1:?usage: build.sh DOCKER_SOCKET}
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${BIN_DIR:-$here/../../target/debug}
version=${VERSION:-0.1.0}
registry=${REGISTRY:-calico-rs}
portmap=${PORTMAP:-/usr/lib/cni/portmap}
busybox=${BUSYBOX:-/bin/busybox}
recipe=$here/../calico-node/build.sh
docker="docker -H unix://$sock"
ip_bin=$(command -v ip || true)
[ -n "$ip_bin" ] || { echo "iproute2's ip is not installed" >&2; exit 1; }
for b in calico-node calicoctl calico calico-ipam calico-kube-controllers; do
    [ -x "$bin_dir/$b" ] || { echo "no executable $bin_dir/$b (cargo build -p calico-rs --bins)" >&2; exit 1; }
done
[ -x "$portmap" ] || { echo "no portmap plugin at $portmap (install containernetworking-plugins)" >&2; exit 1; }
# The CNI image's shell has no libc of its own to fall back on: busybox must be static.
if ! "$busybox" true 2>/dev/null || ldd "$busybox" >/dev/null 2>&1; then
    echo "$busybox is not a static busybox (install busybox-static)" >&2; exit 1
fi

sh "$recipe" "$sock" "$registry/node:$version" "$bin_dir/calico-node" "$bin_dir/calicoctl" "$ip_bin"
sh "$recipe" "$sock" "$registry/kube-controllers:$version" "$bin_dir/calico-kube-controllers"

# CNI image: the recipe puts every program under /bin; one throw-away container (no network)
# then installs busybox's applet links and moves the plugins to /opt/cni/bin, where the
# install-cni init container copies them from, and the result is committed with a shell as CMD.
cni_tag=$registry/cni:$version
stage=$registry/cni-stage:$version
sh "$recipe" "$sock" "$stage" "$busybox" "$bin_dir/calico" "$bin_dir/calico-ipam" "$portmap" >/dev/null
name=calico-rs-cni-stage-$$
trap '$docker rm -f "$name" >/dev/null 2>&1 || true; $docker rmi "$stage" >/dev/null 2>&1 || true' EXIT
$docker run --name "$name" --net none --entrypoint /bin/busybox "$stage" sh -c '
    set -eu
    /bin/busybox --install -s /bin
    mkdir -p /opt/cni/bin
    for p in calico calico-ipam portmap; do mv "/bin/$p" "/opt/cni/bin/$p"; done'
$docker commit --change 'ENTRYPOINT []' --change 'CMD ["/bin/sh"]' "$name" "$cni_tag" >/dev/null
echo "$cni_tag"
