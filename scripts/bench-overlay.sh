#!/usr/bin/env bash
# Overlay benchmark of issue 13 (docs/BENCHMARKS.md, section "VXLAN"): iperf3 TCP throughput
# pod to pod across a router over calico-node's vxlan.calico, against host to host over a plain
# kernel VXLAN device configured by hand on the same two lab hosts, alternating in one run.
# Everything runs inside lab namespaces (crates/node/tests/overlay_lab.rs, bench_vxlan_throughput);
# needs root, etcd and iperf3, and the debug binaries calico-node and calicoctl (built here).
# The data path is the kernel's: the build profile of the agent does not change it.
#
#   scripts/bench-overlay.sh            # 3 rounds of 5 s per path
#   ROUNDS=5 scripts/bench-overlay.sh
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo build -p calico-rs --bin calico-node --bin calicoctl >&2
cargo test -p calico-node --test overlay_lab bench_vxlan_throughput -- --ignored --nocapture \
    2>&1 | tee "$out" >&2

echo "kernel $(uname -r), $(iperf3 --version | head -1), $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "| iperf3, TCP, 5 s per run | Gbit/s (median) | runs |"
echo "|---|---|---|"
grep -o 'BENCH|overlay|.*' "$out" | awk -F'|' '{ printf "| %s | %s | %s |\n", $3, $4, $5 }'
grep -o 'BENCH|ratio|.*' "$out" | awk -F'|' '{ printf "\nratio pod/host: %s\n", $3 }'
