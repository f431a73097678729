#!/usr/bin/env bash
# Channel churn against the README's cluster (3 brokers, R = 2, 1 gateway):
# N channels published to once each through the server API, then left alone;
# samples each broker's switchboard_replication_channels, RSS, CPU time, heartbeats dropped and
# registers.jsonl size until every broker holds nothing.
# Run from the repository root after `cargo build --release`:
#   N=20000 bash bench/churn/retire.sh
# Figures of sessions 19 and 20: docs/benchmarks.md "Retiring idle channels under churn".
set -euo pipefail
ROOT=$PWD
N=${N:-20000}
SB=${SB:-$PWD/target/release/switchboard}
W=$(mktemp -d /tmp/churn.XXXX); cd "$W"
sed -e 's/history_ttl = "5m"/history_ttl = "1s"/' \
    -e 's/idempotency_window = "5m"/idempotency_window = "1s"/' \
    -e 's/^\[broker\]$/[broker]\nreplication_factor = 2/' \
    -e 's/rate_per_second = 50.0/rate_per_second = 100000.0/' -e 's/rate_burst = 100$/rate_burst = 100000/' \
    "$ROOT/config/dev.toml" > sb.toml
$SB ca init --dir certs >/dev/null
for n in b1 b2 b3; do $SB ca issue --dir certs --name $n --role broker >/dev/null; done
$SB ca issue --dir certs --name g1 --role gateway >/dev/null
export SWITCHBOARD_GOSSIP_KEY=$PWD/certs/gossip.key
tls() { echo --tls-ca certs/ca.crt --tls-cert certs/$1.crt --tls-key certs/$1.key; }
pids=()
$SB node --config sb.toml --name b1 --grpc 127.0.0.1:7001 --http 127.0.0.1:9101 --gossip 127.0.0.1:7101 --data-dir data/b1 $(tls b1) >b1.log 2>&1 & pids+=($!)
$SB node --config sb.toml --name b2 --grpc 127.0.0.1:7002 --http 127.0.0.1:9102 --gossip 127.0.0.1:7102 --seed 127.0.0.1:7101 --data-dir data/b2 $(tls b2) >b2.log 2>&1 & pids+=($!)
$SB node --config sb.toml --name b3 --grpc 127.0.0.1:7003 --http 127.0.0.1:9103 --gossip 127.0.0.1:7103 --seed 127.0.0.1:7101 --data-dir data/b3 $(tls b3) >b3.log 2>&1 & pids+=($!)
$SB gateway --config sb.toml --name g1 --listen 127.0.0.1:8001 --gossip 127.0.0.1:7201 --seed 127.0.0.1:7101 $(tls g1) >g1.log 2>&1 & pids+=($!)
trap 'kill ${pids[@]} 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:8001/readyz >/dev/null 2>&1 && break; sleep 0.2; done
sleep 3
python3 "$ROOT/bench/churn/churn.py" "$N" "${pids[0]}" "${pids[1]}" "${pids[2]}" "$W"
for n in b1 b2 b3; do
  echo "$n: $(grep -c 'TLS handshake refused' $n.log) TLS handshakes refused, $(grep -c ' WARN ' $n.log) WARN lines, $(wc -l < data/$n/registers.jsonl) lines in registers.jsonl"
done
echo "g1: $(grep -c ' WARN ' g1.log) WARN lines"
