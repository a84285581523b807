#!/usr/bin/env bash
# Runs every test of the project on a fresh machine (as root): installs what is missing, builds,
# checks formatting and lints, then runs all unit, property and lab tests against real etcd,
# BIRD, GoBGP, FRR, dockerd and the kernel inside throw-away network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "test.sh: run as root (tests create network namespaces)" >&2; exit 1; }

scripts/setup.sh
# Leftovers of runs that were killed (namespaces, daemons) go before we start.
target/debug/calico-lab sweep || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== tests"
profile=default; [[ "${CI:-}" == true ]] && profile=ci
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --profile "$profile" "$@"
else
  cargo test --workspace -- --test-threads 2 "$@"
fi
