#!/usr/bin/env bash
# Pod start-up on the real Kubernetes lab: calico-rs vs Debian's ptp + host-local reference
# plugins on the same node (tests/k8s_bench.rs).
#
#   sudo scripts/bench-k8s.sh [ROUNDS]     # default 5 rounds
#
# Brings up its own cluster (crates/lab/src/cluster: control plane, two nodes with containerd
# and a kubelet), installs calico-rs with helm, and tears everything down at the end. Every
# round, for each plugin (which goes first alternates): node1's CNI configuration is swapped
# (a 00-bench-ptp.conflist sorts before calico's 10-calico.conflist; containerd loads the first
# file), a pinger pod starts on node1, then a new pod is applied with kubectl on node1: the
# time to Running (kubectl wait) and to the first ping the pinger gets answered (kubectl exec of
# a ping loop) are measured from the apply. Both pods are deleted before the next swap, so each
# CNI DEL goes to the plugin that added the pod. Then the cross-node figure for calico-rs: a
# pinger on node2, new pods on node1. Each apply waits a per-round phase offset first (the same
# for both plugins) so the rounds spread over the kubelet's 1 s PLEG relist cycle. Prints each
# round with a trace from node1's logs (kubelet at verbosity 2 on every node, containerd,
# calico's ADD step times) and a table of medians and means. Debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "bench-k8s.sh: run as root" >&2; exit 1; }
scripts/k8s-build.sh >&2
echo "kernel $(uname -r), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
CALICO_LAB_KUBELET_V=2 K8S_BENCH_ROUNDS=${1:-5} cargo test --test k8s_bench -- --ignored --nocapture --test-threads=1
