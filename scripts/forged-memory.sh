#!/usr/bin/env bash
# Peak memory of a receiver under forged large deliveries, on loopback:
#   scripts/forged-memory.sh axum-receiver|actix-receiver [CONNECTIONS] [SECONDS]
# wrk keeps CONNECTIONS (default 64) connections busy for SECONDS (default 10), each POSTing a
# 2 MiB body (the default limit) with a well-formed signature that does not match; every answer
# is 401. The receiver's peak resident set (VmHWM) is read from /proc before it stops, next to
# its resident set when idle, so the cost per connection is (peak - idle) / CONNECTIONS.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-axum-receiver}
connections=${2:-64}
seconds=${3:-10}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build -q --release -p examples --bin "$bin"

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
head = '{"id":"evt_forged","type":"test","created_at":"2026-01-01T00:00:00Z","data":{"pad":"'
tail = '"}}'
body = head + "x" * (2 * 1024 * 1024 - len(head) - len(tail)) + tail
open(f"{work}/body.json", "w").write(body)
open(f"{work}/signature", "w").write("ab" * 32)
PY
AIRMY_WEBHOOK_SECRET=whsec_memory_test AIRMY_LISTEN=127.0.0.1:0 "target/release/$bin" > "$work/out" 2>/dev/null &
pid=$!
for _ in $(seq 1 100); do grep -q '^listening on' "$work/out" && break; sleep 0.1; done
url="$(sed -n 's/^listening on //p' "$work/out" | head -1)/hooks/airmy"
idle=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status)
export BODY_FILE="$work/body.json" SIG_FILE="$work/signature"
out=$(wrk -t2 -c"$connections" -d"${seconds}s" -s scripts/airmy-post.lua "$url")
peak=$(awk '/^VmHWM/ {print $2}' /proc/"$pid"/status)
requests=$(awk '/requests in/ {print $1}' <<<"$out")
non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
echo "$bin: $connections connections x 2 MiB forged bodies for ${seconds}s: $requests requests ($non2xx refused)"
awk -v i="$idle" -v p="$peak" -v c="$connections" 'BEGIN {
  printf "idle RSS %.1f MB, peak RSS %.1f MB, (peak - idle) / connections = %.2f MiB\n", i/1024, p/1024, (p-i)/1024/c }'
