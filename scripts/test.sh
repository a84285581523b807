#!/usr/bin/env bash
# Runs every test of the project on a fresh machine as root (through sudo when started by
# another user and sudo is installed): installs what is missing, builds, checks formatting and
# lints, then runs all unit, property and lab tests against real etcd, BIRD, GoBGP, FRR, dockerd
# and the kernel inside throw-away network namespaces.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root "tests create network namespaces" "$@"
cd "$(dirname "$0")/.."

scripts/setup.sh
# Leftovers of runs that were killed (namespaces, daemons) go before we start.
target/debug/calico-lab sweep || true

step "cargo fmt --check (seconds)" cargo fmt --all -- --check
step "cargo clippy -D warnings (several minutes on the first run, then seconds)" \
  cargo clippy --workspace --all-targets -- -D warnings

profile=default; [[ "${CI:-}" == true ]] && profile=ci
if cargo nextest --version >/dev/null 2>&1; then
  step "tests: cargo nextest (builds the tests first; the whole suite takes tens of minutes on 2 cores)" \
    cargo nextest run --workspace --profile "$profile" "$@"
else
  echo "test.sh: cargo-nextest is missing (scripts/setup.sh installs it): plain cargo test, no per-test timeouts" >&2
  step "tests: cargo test (builds the tests first; the whole suite takes tens of minutes on 2 cores)" \
    cargo test --workspace -- --test-threads 2 "$@"
fi
