#!/usr/bin/env bash
# Instructions per request of a bench server's routers, counted by callgrind while wrk drives
# the real server over loopback (deterministic, unlike req/s on a shared machine):
#   scripts/server-instructions.sh axum-bench-server [SECONDS]
# For each router: start the server under callgrind, warm up for 2 s, zero the counters, run
# wrk for SECONDS, dump the counters, and divide by the requests wrk completed. The counts
# cover every thread of the server process (hyper/actix, the router, our code, malloc), not the
# kernel. Under valgrind, sha2 runs its portable code instead of SHA-NI, so the report gives
# the count with and without the SHA-256 compression function; the second is what the routers
# differ in besides the HMAC itself.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:-axum-bench-server}
seconds=${2:-10}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build -q --release -p examples --bin "$server"

work=$(mktemp -d)
vpid=
trap '[ -n "$vpid" ] && kill "$vpid" 2>/dev/null; rm -rf "$work"' EXIT
export BODY_FILE="$work/body.json" SIG_FILE="$work/signature"

# The routers, from one plain start of the server.
"target/release/$server" "$work" > "$work/names" &
spid=$!
for _ in $(seq 1 100); do grep -qx ready "$work/names" && break; sleep 0.1; done
kill "$spid"; wait "$spid" 2>/dev/null || true
mapfile -t names < <(grep -v '^ready$' "$work/names" | awk '{print $1}')

for name in "${names[@]}"; do
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.%p" "target/release/$server" "$work" \
    > "$work/out" 2> "$work/valgrind.log" &
  vpid=$!
  for _ in $(seq 1 300); do grep -qx ready "$work/out" && break; sleep 0.2; done
  grep -qx ready "$work/out" || { echo "$server did not start under valgrind" >&2; exit 1; }
  url=$(awk -v r="$name" '$1 == r {print $2}' "$work/out")
  wrk -t1 -c8 -d2s -s scripts/airmy-post.lua "$url" > /dev/null
  callgrind_control -z "$vpid" > /dev/null 2>&1
  out=$(wrk -t1 -c8 -d"${seconds}s" -s scripts/airmy-post.lua "$url")
  callgrind_control -d "$vpid" > /dev/null 2>&1
  if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers" >&2; exit 1; fi
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  kill -INT "$vpid"; wait "$vpid" 2>/dev/null || true
  vpid=
  dump=$(ls "$work/$name".*.1)
  totals=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); t = $1 }
         /sha2::sha256::compress256 / { gsub(",", "", $1); c = $1 }
         END { printf "%.0f %.0f\n", t, c }')
  echo "$name $requests $totals" >> "$work/results"
done

python3 - "$work/results" "$server" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, requests, total, sha = line.split()
    requests = int(requests)
    rows[name] = (requests, int(total) / requests, (int(total) - int(sha)) / requests)
print(f"\n{sys.argv[2]}: instructions per request, server process, callgrind\n")
print("| router | requests counted | all | without SHA-256 compression | vs hand-written (without) | vs unverified (without) |")
print("|---|---|---|---|---|---|")
for name, (n, total, rest) in rows.items():
    print(f"| {name} | {n:,} | {total:,.0f} | {rest:,.0f} | {rest / rows['handwritten'][2]:.3f}x | {rest / rows['insecure'][2]:.3f}x |")
PY
