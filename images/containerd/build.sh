#!/bin/sh
# Builds the images a containerd node of the Kubernetes lab needs, FROM scratch, as
# docker-archive tarballs for `ctr -n k8s.io images import` (no registry, no dockerd):
#   pause.tar        localhost/pause:1                      images/pause/pause.rs, static (the CRI sandbox_image)
#   busybox.tar      localhost/busybox:1                    Debian's busybox-static, one link per applet
#   node.tar         localhost/calico-rs/node:VERSION       /bin/calico-node, /bin/calicoctl, /bin/ip
#   cni.tar          localhost/calico-rs/cni:VERSION        busybox /bin/sh + applets, /opt/cni/bin/{calico,calico-ipam,portmap}
#   controllers.tar  localhost/calico-rs/kube-controllers:VERSION  /bin/calico-kube-controllers
# The three calico-rs images have the contents of images/kubernetes/build.sh's (the chart's
# images), each with its programs and exactly the shared libraries ldd names.
#
# usage: images/containerd/build.sh OUT_DIR [base]     (base: only pause and busybox)
# env:   BIN_DIR  calico-rs binaries (default target/debug)   VERSION  tag (default 0.1.0)
#        PORTMAP  portmap plugin (default /usr/lib/cni/portmap) BUSYBOX  static busybox
set -eu
out=${1:?usage: build.sh OUT_DIR [base]}
only=${2:-all}
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${BIN_DIR:-$here/../../target/debug}
version=${VERSION:-0.1.0}
portmap=${PORTMAP:-/usr/lib/cni/portmap}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || busybox=/usr/bin/busybox
if ! "$busybox" true 2>/dev/null || ldd "$busybox" >/dev/null 2>&1; then
    echo "$busybox is not a static busybox (install busybox-static)" >&2; exit 1
fi
if [ "$only" != base ]; then
    for b in calico-node calicoctl calico calico-ipam calico-kube-controllers; do
        [ -x "$bin_dir/$b" ] || { echo "no executable $bin_dir/$b (cargo build -p calico-rs --bins)" >&2; exit 1; }
    done
    [ -x "$portmap" ] || { echo "no portmap plugin at $portmap (install containernetworking-plugins)" >&2; exit 1; }
fi
ip_bin=$(command -v ip) || { echo "iproute2's ip is not installed" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# new_root NAME: an empty root filesystem with the directories every image has.
new_root() {
    r=$work/$1
    mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/run"
    chmod 1777 "$r/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"
    echo 'root:x:0:' > "$r/etc/group"
}

# add_program ROOT BIN [DEST]: BIN at DEST (default /bin/NAME) plus the libraries ldd names,
# at their own absolute paths (the loader and RUNPATHs expect them there).
add_program() {
    dest=${3:-/bin/$(basename "$2")}
    mkdir -p "$1$(dirname "$dest")"
    cp -L "$2" "$1$dest"
    for lib in $(ldd "$2" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'); do
        [ -e "$1$lib" ] || { mkdir -p "$1$(dirname "$lib")"; cp -L "$lib" "$1$lib"; }
    done
}

# add_busybox ROOT: static busybox at /bin/busybox and a link per applet.
add_busybox() {
    cp "$busybox" "$1/bin/busybox"
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
    done
}

# archive ROOT TAG ENTRYPOINT_JSON CMD_JSON FILE: a docker-archive (manifest.json, config,
# one layer) of ROOT, reproducible (sorted, owner root, mtime 0).
archive() {
    a=$work/archive-$(basename "$5" .tar)
    mkdir -p "$a"
    tar -C "$1" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -cf "$a/layer.tar" .
    diff=$(sha256sum "$a/layer.tar" | cut -c1-64)
    mkdir -p "$a/$diff"
    mv "$a/layer.tar" "$a/$diff/layer.tar"
    printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],"Entrypoint":%s,"Cmd":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"calico-rs images/containerd/build.sh (FROM scratch)"}]}' \
        "$3" "$4" "$diff" > "$a/config.json"
    cfg=$(sha256sum "$a/config.json" | cut -c1-64)
    mv "$a/config.json" "$a/$cfg.json"
    printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg" "$2" "$diff" > "$a/manifest.json"
    tar -C "$a" --sort=name --mtime=@0 --numeric-owner --owner=0 --group=0 -cf "$5" \
        manifest.json "$cfg.json" "$diff"
    echo "$2 $5"
}

pause_bin=$work/pause.bin
rustc --edition 2024 -O -C panic=abort -C target-feature=+crt-static -C relocation-model=static -C strip=symbols \
    "$here/../pause/pause.rs" -o "$pause_bin"
if ldd "$pause_bin" >/dev/null 2>&1; then echo "pause is not static" >&2; exit 1; fi
new_root pause
cp "$pause_bin" "$work/pause/pause"
archive "$work/pause" localhost/pause:1 '["/pause"]' 'null' "$out/pause.tar"

new_root busybox
add_busybox "$work/busybox"
archive "$work/busybox" localhost/busybox:1 'null' '["sh"]' "$out/busybox.tar"
[ "$only" = base ] && exit 0

new_root node
add_program "$work/node" "$bin_dir/calico-node"
add_program "$work/node" "$bin_dir/calicoctl"
add_program "$work/node" "$ip_bin"
mkdir -p "$work/node/var/run/calico" "$work/node/var/lib/calico"
archive "$work/node" "localhost/calico-rs/node:$version" '["/bin/calico-node"]' 'null' "$out/node.tar"

new_root cni
add_busybox "$work/cni"
for p in "$bin_dir/calico" "$bin_dir/calico-ipam" "$portmap"; do
    add_program "$work/cni" "$p" "/opt/cni/bin/$(basename "$p")"
done
archive "$work/cni" "localhost/calico-rs/cni:$version" 'null' '["/bin/sh"]' "$out/cni.tar"

new_root controllers
add_program "$work/controllers" "$bin_dir/calico-kube-controllers"
archive "$work/controllers" "localhost/calico-rs/kube-controllers:$version" '["/bin/calico-kube-controllers"]' 'null' "$out/controllers.tar"
