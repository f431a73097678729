#!/usr/bin/env bash
# Starts `switchboard dev` from BINARY, runs one flood (memory_flood.mjs
# arguments after the binary), and prints its RSS before, at the peak and
# after. Usage: memory_flood.sh BINARY CONNS SECONDS PAYLOAD_BYTES CHANNELS_PER_CONN
set -euo pipefail
bin=$1; shift
port=${PORT:-18000}
"$bin" dev --listen 127.0.0.1:$port >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$pid/status; }
before=$(rss)
peak=$before
( while kill -0 $pid 2>/dev/null; do r=$(rss); echo "$r"; sleep 0.5; done ) > /tmp/memory_flood_rss.$$ &
sampler=$!
outcome=$(node --experimental-websocket "$(dirname "$0")/memory_flood.mjs" ws://127.0.0.1:$port/ws "$@")
kill $sampler
peak=$(sort -n /tmp/memory_flood_rss.$$ | tail -1)
after=$(rss)
rm -f /tmp/memory_flood_rss.$$
channels=$(curl -fs http://127.0.0.1:$port/metrics | awk '/^switchboard_broker_channels / {print $2}')
charged=$(curl -fs http://127.0.0.1:$port/metrics | awk '/^switchboard_broker_memory_bytes / {printf "%.1f", $2/1048576}')
echo "flood $*: RSS before ${before} MiB, peak ${peak} MiB, after ${after} MiB; channels ${channels:-?}; charged ${charged:-n/a} MiB; replies $outcome"
