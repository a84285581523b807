#!/usr/bin/env bash
# Builds the Kubernetes components the cluster lab runs (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kubectl, kube-proxy) from the pinned k8s.io/kubernetes Go module in tests/cluster/,
# into target/k8s/<version>/bin. A finished build is kept per pinned version and go.sum: a warm
# call returns at once; Go's own build cache (~/.cache/go-build) makes a rebuild after
# `cargo clean` a relink, not a recompile. Never commit what this builds.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=tests/cluster
version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")
[[ -n $version ]] || { echo "k8s-build: no k8s.io/kubernetes version in $mod/go.mod" >&2; exit 1; }
out=${K8S_BIN_DIR:-$PWD/target/k8s/$version/bin}
stamp=$out/.built-from
tools=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy)
want=$( (sha256sum "$mod/go.mod" "$mod/go.sum"; echo "${tools[*]}") | sha256sum | cut -c1-16)

if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  echo "k8s-build: $version binaries up to date in $out"
  exit 0
fi
command -v go >/dev/null || { echo "k8s-build: Go is not installed (needs Go >= 1.25)" >&2; exit 1; }
mkdir -p "$out"
minor=${version#v1.}; minor=${minor%%.*}
pkg_ver=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
ldflags="-s -w"
for p in "${pkg_ver[@]}"; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
start=$(date +%s)
echo "k8s-build: building ${tools[*]} $version into $out"
echo "k8s-build: a cold build takes about 20-30 minutes on 2 cores (Go compiles ~6,000 packages); later builds reuse Go's cache"
for t in "${tools[@]}"; do
  t0=$(date +%s)
  echo "k8s-build: [$t] compiling..."
  (cd "$mod" && CGO_ENABLED=0 go build -mod=mod -trimpath -tags selinux,notest \
      -ldflags "$ldflags" -o "$out/$t" "k8s.io/kubernetes/cmd/$t")
  echo "k8s-build: [$t] done in $(( $(date +%s) - t0 )) s"
done
echo "$want" > "$stamp"
echo "k8s-build: all built in $(( $(date +%s) - start )) s"
