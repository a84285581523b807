#!/usr/bin/env bash
# IPAM allocation rate against a real etcd, next to the floor measured in the same run.
#
#   scripts/bench-ipam.sh [ALLOCATIONS_PER_ALLOCATOR]   (default 300)
#   PROFILE=release scripts/bench-ipam.sh               (optimised build; default: dev)
#   IPAM_STRESS=target/release/ipam-stress scripts/bench-ipam.sh   (prebuilt binary, no build)
#
# For N in 1, 4, 16 concurrent allocators (each a separate host, as CNI plugins on separate
# nodes, all in one process), every allocator takes ALLOCATIONS single addresses, each with its
# own handle, from one /16 pool with /26 blocks. The floor is the rate at which the same etcd
# completes the same number of compare-and-swap transactions of the same shape (compare a
# block's mod revision and a handle's absence; put a /26 block document and a handle), with the
# same concurrency, each stream on its own key. Ratio = floor / IPAM rate (1.0 = one etcd round
# trip per allocation and nothing else). Each figure is the median of three alternating runs.
#
# etcd runs on 127.0.0.1 with its data directory on /dev/shm (tmpfs), so disk fsync latency is
# not part of either figure.
set -euo pipefail
cd "$(dirname "$0")/.."
N_ALLOC="${1:-300}"
PROFILE="${PROFILE:-dev}"
if [ -n "${IPAM_STRESS:-}" ]; then
  BIN="$IPAM_STRESS"   # a prebuilt ipam-stress
elif [ "$PROFILE" = release ]; then
  cargo build -q --release -p calico-ipam --bin ipam-stress
  BIN=target/release/ipam-stress
else
  cargo build -q -p calico-ipam --bin ipam-stress
  BIN=target/debug/ipam-stress
fi

DATA=$(mktemp -d /dev/shm/bench-ipam-etcd.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CPORT=$(port); PPORT=$(port)
URL="http://127.0.0.1:$CPORT"
etcd --name bench --data-dir "$DATA/data" \
  --listen-client-urls "$URL" --advertise-client-urls "$URL" \
  --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-cluster "bench=http://127.0.0.1:$PPORT" --log-level warn --logger zap \
  >"$DATA/etcd.log" 2>&1 &
ETCD_PID=$!
cleanup() { kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints "$URL" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done

"$BIN" --endpoints "$URL" --host setup --setup-pool 10.200.0.0/16

rate() { jq -r '(.allocations / .seconds)'; }
echo "etcd $(etcd --version | head -1 | awk '{print $3}'), profile $PROFILE, $N_ALLOC allocations per allocator, $(nproc) CPUs"
echo
echo "| concurrent allocators | IPAM allocations/s | floor CAS txns/s | floor / IPAM |"
echo "|---:|---:|---:|---:|"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for N in 1 4 16; do
  # Floor and IPAM alternate, three runs each, so load from elsewhere hits both alike; medians.
  FL=(); IP=()
  for RUN in 1 2 3; do
    FL+=("$("$BIN" --endpoints "$URL" --host "floor$N-$RUN" --mode bench --floor --tasks "$N" --churn "$N_ALLOC" | rate)")
    IP+=("$("$BIN" --endpoints "$URL" --host "bench$N-$RUN" --mode bench --tasks "$N" --churn "$N_ALLOC" | rate)")
  done
  FLOOR=$(printf '%s\n' "${FL[@]}" | median)
  IPAM=$(printf '%s\n' "${IP[@]}" | median)
  python3 -c "import sys; f,i=float(sys.argv[2]),float(sys.argv[3]); print(f'| {sys.argv[1]} | {i:.0f} | {f:.0f} | {f/i:.2f} |')" "$N" "$FLOOR" "$IPAM"
done
