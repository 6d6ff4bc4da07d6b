#!/usr/bin/env bash
# Measure announces per second and p99 latency of p2p-tracker and of
# opentracker, side by side, with wrk on loopback and one announce URL.
#
# Usage: benchmarks/announce.sh [SECONDS] [CONNECTIONS]
# Needs the Debian packages wrk and opentracker, and the project's .venv.
# Each server gets the same wrk run: one thread (so wrk and the server each
# keep a core on a 2-core machine), CONNECTIONS keep-alive connections.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-10}"
CONNECTIONS="${2:-50}"
PYTHON=.venv/bin/python

for tool in wrk opentracker; do
    command -v "$tool" >/dev/null || { echo "announce.sh: $tool not found; apt-get install $tool" >&2; exit 2; }
done

WORK="$(mktemp -d)"
# opentracker drops root privileges to `nobody` and chroots into its directory.
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "announce.sh: nothing listens on 127.0.0.1:$1 after 10 s" >&2
    exit 1
}

# The tracker under test, with one registered torrent.
TRACKER_PORT="$(free_port)"
.venv/bin/p2p-tracker --listen "127.0.0.1:$TRACKER_PORT" --data-dir "$WORK/tracker" --log-level WARNING \
    2>"$WORK/tracker.log" &
PIDS+=($!)
wait_port "$TRACKER_PORT"

INFO_HASH="$("$PYTHON" - "$TRACKER_PORT" <<'PY'
import hashlib, os, sys
import bencode, httpx
base = f"http://127.0.0.1:{sys.argv[1]}/api/v1"
info = {b"length": 1 << 20, b"name": b"bench.bin", b"piece length": 1 << 16,
        b"pieces": os.urandom(20 * 16), b"private": 1}
metainfo = bencode.bencode({b"announce": b"http://127.0.0.1/announce", b"info": info})
task = httpx.post(f"{base}/tasks", json={"url": "http://127.0.0.1:9/bench.bin"}).json()
httpx.put(f"{base}/tasks/{task['id']}/metainfo", content=metainfo).raise_for_status()
print(hashlib.sha1(bencode.bencode(info)).hexdigest())
PY
)"

# opentracker, serving the same info hash from its whitelist.
OPENTRACKER_PORT="$(free_port)"
echo "$INFO_HASH" >"$WORK/whitelist"
opentracker -i 127.0.0.1 -p "$OPENTRACKER_PORT" -P "$OPENTRACKER_PORT" -d "$WORK" -u nobody \
    -w whitelist >"$WORK/opentracker.log" 2>&1 &
PIDS+=($!)
wait_port "$OPENTRACKER_PORT"

ESCAPED_HASH="$("$PYTHON" -c 'import sys, urllib.parse; print(urllib.parse.quote(bytes.fromhex(sys.argv[1])))' "$INFO_HASH")"
QUERY="info_hash=$ESCAPED_HASH&peer_id=-BE0001-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=1000&compact=1&event=started"

# Prints "requests_per_second p99_milliseconds" for one server.
measure() {
    local url="http://127.0.0.1:$1/announce?$QUERY"
    curl -sf "$url" | grep -q "interval" || { echo "announce.sh: $url did not return an announce reply" >&2; exit 1; }
    wrk -t1 -c"$CONNECTIONS" -d2s "$url" >/dev/null  # warm-up
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" | awk '
        /Requests\/sec/ { rate = $2 }
        $1 == "99%" { p99 = $2; if (p99 ~ /us$/) p99 = p99 / 1000; else if (p99 ~ /ms$/) p99 = p99 + 0; else if (p99 ~ /s$/) p99 = p99 * 1000 }
        END { printf "%.0f %.2f\n", rate, p99 }'
}

read -r TRACKER_RATE TRACKER_P99 <<<"$(measure "$TRACKER_PORT")"
read -r OPENTRACKER_RATE OPENTRACKER_P99 <<<"$(measure "$OPENTRACKER_PORT")"

echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, one announce URL, $(nproc) cores"
printf '%-12s %12s %10s\n' server "announces/s" "p99 ms"
printf '%-12s %12s %10s\n' p2p-tracker "$TRACKER_RATE" "$TRACKER_P99"
printf '%-12s %12s %10s\n' opentracker "$OPENTRACKER_RATE" "$OPENTRACKER_P99"
"$PYTHON" -c 'import sys; print(f"ratio p2p-tracker / opentracker: {int(sys.argv[1]) / int(sys.argv[2]):.2f}")' \
    "$TRACKER_RATE" "$OPENTRACKER_RATE"
