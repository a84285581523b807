#!/usr/bin/env bash
# Benchmark: `calicoctl apply` of N resources against the floor of writing the same bytes to the
# same etcd with etcdctl, side by side in one run. Prints a Markdown table for docs/BENCHMARKS.md.
#
#   scripts/bench-apply.sh [N]          (default N=1000; needs etcd, etcdctl, python3)
#   CALICOCTL=/path/to/calicoctl scripts/bench-apply.sh
#
# Without CALICOCTL it uses target/release/calicoctl, building it (release) if missing.
#
# Method (all against one etcd on 127.0.0.1 with a fresh data directory):
#   1. calicoctl apply -f <N GlobalNetworkSets in one file>, into an empty datastore (creates).
#      calicoctl assumes etcd's default limit of 128 operations per transaction.
#   2. The keys and values calicoctl stored are read back, the prefix is deleted, and the same
#      key/value bytes are written again by etcdctl:
#        floor:     ONE `etcdctl txn` process putting all N keys in one transaction (one process
#                   start, one round trip; etcd runs with --max-txn-ops >= N to allow it);
#        chunked:   `etcdctl txn` with 128 puts per transaction, one process per transaction;
#        per-key:   one `etcdctl put` process per key (the naive scripted loader).
#   Each measurement is repeated RUNS times (default 3) and the median is reported.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000}
RUNS=${RUNS:-3}
for tool in etcd etcdctl python3; do
  command -v "$tool" >/dev/null || { echo "bench-apply: $tool not found (run scripts/setup.sh)" >&2; exit 1; }
done

CALICOCTL=${CALICOCTL:-}
if [[ -z "$CALICOCTL" ]]; then
  CALICOCTL=target/release/calicoctl
  [[ -x "$CALICOCTL" ]] || cargo build --release --bin calicoctl
fi

work=$(mktemp -d /tmp/calico-bench-apply.XXXXXX)
etcd_pid=
cleanup() {
  [[ -n "$etcd_pid" ]] && kill -9 "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cport=$(free_port); pport=$(free_port)
endpoint="http://127.0.0.1:$cport"
etcd --name bench --data-dir "$work/data" \
  --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "bench=http://127.0.0.1:$pport" --logger=zap --log-level=error \
  --max-txn-ops "$(( N > 128 ? N : 128 ))" \
  >"$work/etcd.log" 2>&1 &
etcd_pid=$!
export ETCDCTL_API=3
ctl() { etcdctl --endpoints="$endpoint" --command-timeout=30s "$@"; }
for _ in $(seq 1 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
ctl endpoint health >/dev/null 2>&1 || { echo "bench-apply: etcd did not start:" >&2; cat "$work/etcd.log" >&2; exit 1; }

cat >"$work/calicoctl.cfg" <<EOF
apiVersion: projectcalico.org/v3
kind: CalicoAPIConfig
metadata:
spec:
  datastoreType: etcdv3
  etcdEndpoints: $endpoint
EOF

# N GlobalNetworkSets, one multi-document file.
python3 - "$N" >"$work/resources.yaml" <<'EOF'
import sys
n = int(sys.argv[1])
for i in range(n):
    print("---")
    print("apiVersion: projectcalico.org/v3")
    print("kind: GlobalNetworkSet")
    print("metadata:")
    print(f"  name: bench-set-{i:05d}")
    print("  labels:")
    print(f"    role: bench")
    print(f"    shard: s{i % 16}")
    print("spec:")
    print("  nets:")
    print(f"    - 10.{i // 256 % 256}.{i % 256}.0/24")
    print(f"    - 172.16.{i % 256}.0/28")
EOF

prefix=/calico/resources/v3/projectcalico.org/
now() { date +%s.%N; }
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

calico_times=(); floor_times=(); chunked_times=(); perkey_times=()
for run in $(seq 1 "$RUNS"); do
  ctl del --prefix "$prefix" >/dev/null
  t0=$(now)
  "$CALICOCTL" apply -c "$work/calicoctl.cfg" -f "$work/resources.yaml" >"$work/apply.out"
  t1=$(now)
  calico_times+=("$(python3 -c "print($t1-$t0)")")

  # The exact bytes calicoctl stored, as etcdctl txn scripts of 128 puts and a put list.
  ctl get --prefix "$prefix" -w json >"$work/stored.json"
  python3 - "$work" "$N" <<'EOF'
import base64, json, sys, os
work, n = sys.argv[1], int(sys.argv[2])
kvs = json.load(open(os.path.join(work, "stored.json"))).get("kvs", [])
if len(kvs) != n:
    sys.exit(f"bench-apply: calicoctl stored {len(kvs)} keys, expected {n}")
pairs = [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv["value"]).decode()) for kv in kvs]
with open(os.path.join(work, "pairs.tsv"), "w") as f:
    for k, v in pairs:
        f.write(k + "\t" + v + "\n")
def txn_script(path, chunk):
    with open(path, "w") as f:
        f.write("\n")  # no compares
        for k, v in chunk:
            f.write(f"put {k} {json.dumps(v)}\n")
        f.write("\n\n")  # no failure ops
txn_script(os.path.join(work, "all.txn"), pairs)
for c, i in enumerate(range(0, len(pairs), 128)):
    txn_script(os.path.join(work, f"chunk-{c:03d}.txn"), pairs[i:i + 128])
EOF
  ctl del --prefix "$prefix" >/dev/null
  t0=$(now)
  ctl txn <"$work/all.txn" >/dev/null
  t1=$(now)
  floor_times+=("$(python3 -c "print($t1-$t0)")")
  [[ $(ctl get --prefix "$prefix" --keys-only | grep -c .) == "$N" ]] \
    || { echo "bench-apply: etcdctl txn did not write $N keys" >&2; exit 1; }

  ctl del --prefix "$prefix" >/dev/null
  t0=$(now)
  for f in "$work"/chunk-*.txn; do ctl txn <"$f" >/dev/null; done
  t1=$(now)
  chunked_times+=("$(python3 -c "print($t1-$t0)")")

  ctl del --prefix "$prefix" >/dev/null
  t0=$(now)
  while IFS=$'\t' read -r k v; do ctl put "$k" "$v" >/dev/null; done <"$work/pairs.tsv"
  t1=$(now)
  perkey_times+=("$(python3 -c "print($t1-$t0)")")
done

c=$(median "${calico_times[@]}"); f=$(median "${floor_times[@]}"); p=$(median "${perkey_times[@]}")
k=$(median "${chunked_times[@]}")
ratio() { python3 -c "print(f'{$1/$f:.2f}')"; }
bytes=$(awk -F'\t' '{ s += length($1) + length($2) } END { print s }' "$work/pairs.tsv")
echo
echo "### calicoctl apply of $N resources vs etcdctl (median of $RUNS runs, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "| writer | what | seconds | ratio to floor |"
echo "|---|---|---:|---:|"
echo "| etcdctl txn (floor) | same $N keys, $bytes bytes: one process, one transaction | $f | 1.00 |"
echo "| calicoctl apply | parse + validate + write $N GlobalNetworkSets (txns of 128) | $c | $(ratio "$c") |"
echo "| etcdctl txn, chunked | 128 puts per transaction, one process each | $k | $(ratio "$k") |"
echo "| etcdctl put per key | one process per key | $p | $(ratio "$p") |"
echo
echo "calicoctl: $CALICOCTL"
