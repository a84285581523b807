#!/bin/sh
# Regenerates manifests/calico-rs.yaml from charts/calico-rs with the default values, so the
# plain manifest and the chart cannot drift (tests/install_artefacts.rs checks they are equal).
# The release is named calico-rs in kube-system; CRDs are included and `helm test` hook pods
# and the uninstall hook are left out (hooks belong to `helm test` and `helm uninstall`, not to
# `kubectl apply`; a hook applied with kubectl would run at once).
#
# usage: scripts/render-manifests.sh [OUTPUT]   (default: manifests/calico-rs.yaml)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/manifests/calico-rs.yaml}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
    echo "# calico-rs: rendered from charts/calico-rs by scripts/render-manifests.sh; do not edit."
    echo "# Install: kubectl apply --server-side -f manifests/calico-rs.yaml"
    echo "# (edit the etcd endpoints in the calico-rs-config ConfigMap first)."
    helm template calico-rs "$root/charts/calico-rs" --namespace kube-system --include-crds --no-hooks
} > "$tmp"
mv "$tmp" "$out"
