#!/usr/bin/env bash
# The agent at cluster scale (issue 15; docs/BENCHMARKS.md, "The agent at cluster scale"):
# the synthetic cluster (tests/scale_support) in a real etcd at 10 and at 1,000 nodes, the real
# calico-node as node-0 with 100 real workloads, write -> enforced in its kernel, range requests
# per change, its peak RSS, then up to BENCH_FOLLOWERS (default 100) model-only calico-node
# processes on the same etcd and etcd's p99 latency idle vs. under 10 changes/s, with etcd and
# the probe on CPU 0 and the agents and the writer on the others (model-only agents at
# SCHED_IDLE; BENCH_PLACEMENT=shared turns that off), and the CPU every party used.
# Everything runs inside lab namespaces (crates/node/tests/bench_scale.rs); needs root and etcd.
# 100 model-only agents at 1,000 nodes take about 12 GiB: one such run at a time.
#
#   scripts/bench-scale.sh                       # debug build, both scales
#   BENCH_PROFILE=release scripts/bench-scale.sh # release build
#   BENCH_FOLLOWERS=20 scripts/bench-scale.sh agent_at_10_nodes
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-debug}
flag=()
[ "$profile" = release ] && flag=(--release)
export BENCH_PROFILE=$profile
cargo build "${flag[@]}" -p calico-rs --bin calico-node
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo test "${flag[@]}" -p calico-node --test bench_scale -- --ignored --nocapture --test-threads=1 "$@" \
    2>&1 | tee "$out" >&2
echo "kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ), $profile build"
grep -o 'BENCH|.*' "$out"
