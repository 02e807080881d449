#!/usr/bin/env bash
# Where an accept's time goes on the Redis inbox with `appendfsync always` (BENCHMARKS.md):
#   scripts/redis-accept-cost.sh [N] [CONCURRENCY]
# Runs redis-server (AOF, appendfsync always) on a free loopback port and axum-receiver pinned to
# core 0, drives it with `inbox-bench load` pinned to core 1 (N unique signed 1 KiB deliveries,
# CONCURRENCY at a time), and counts with `perf stat` over the load: the CPU time of the
# receiver and of redis-server, and redis-server's fdatasync calls. Three receivers in turn: no
# inbox; the Redis inbox with its workers parked (AIRMY_HANDLER_DELAY_MS=600000: accepts
# alone); the Redis inbox draining as it accepts. (This machine's VMs have no hardware
# instruction counters; task-clock is the CPU time.)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
concurrency=${2:-32}
cargo build -q --release -p examples --bin axum-receiver --bin inbox-bench
export AIRMY_WEBHOOK_SECRET=whsec_inbox_load_bench AIRMY_LISTEN=127.0.0.1:0
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
  --dir "$work" > /dev/null &
redis=$!
trap 'kill $redis 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.1; done
run() { # name, env...
  local name=$1; shift
  env "$@" taskset -c 0 target/release/axum-receiver > "$work/$name.out" 2>/dev/null &
  local receiver=$!
  for _ in $(seq 1 100); do grep -q '^listening on' "$work/$name.out" && break; sleep 0.1; done
  local url; url="$(sed -n 's/^listening on //p' "$work/$name.out" | head -1)/hooks/airmy"
  taskset -c 1 target/release/inbox-bench load "$url" 2000 "$concurrency" > /dev/null
  perf stat -x, -e task-clock -p "$receiver" -o "$work/$name.receiver" &
  local s1=$!
  perf stat -x, -e task-clock,syscalls:sys_enter_fdatasync -p "$redis" -o "$work/$name.redis" &
  local s2=$!
  sleep 0.3
  local line; line=$(taskset -c 1 target/release/inbox-bench load "$url" "$n" "$concurrency")
  kill -INT $s1 $s2; wait $s1 $s2 2>/dev/null || true
  kill $receiver; wait $receiver 2>/dev/null || true
  local rps; rps=$(echo "$line" | sed -n 's/.*concurrent: \([0-9]*\) req\/s.*/\1/p')
  local rcpu; rcpu=$(grep task-clock "$work/$name.receiver" | cut -d, -f1)
  local dcpu; dcpu=$(grep task-clock "$work/$name.redis" | cut -d, -f1)
  local syncs; syncs=$(grep fdatasync "$work/$name.redis" | cut -d, -f1)
  python3 - "$name" "$n" "$rps" "$rcpu" "$dcpu" "$syncs" <<'PY'
import sys
name, n, rps, rcpu, dcpu, syncs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5] or 0), float(sys.argv[6] or 0)
wall = n / rps
line = f"{name}: {rps:.0f} req/s; receiver {rcpu * 1e3 / n:.1f} us CPU per request"
if syncs:
    line += (f"; redis-server {dcpu * 1e3 / n:.1f} us CPU per request, {syncs:.0f} fdatasync "
             f"({n / syncs:.1f} requests each, one per {wall * 1e3 / syncs:.2f} ms)")
line += f"; both cores busy {(rcpu + dcpu) / 1e3 / (2 * wall) * 100:.0f} %"
print(line)
PY
}
run "no inbox"
run "inbox, workers parked" AIRMY_INBOX="redis://127.0.0.1:$port" AIRMY_HANDLER_DELAY_MS=600000
run "inbox, draining" AIRMY_INBOX="redis://127.0.0.1:$port"
