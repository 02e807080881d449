#!/usr/bin/env bash
# Load benchmark of a receiver's routers on loopback with wrk, in one run:
#   scripts/load-bench.sh axum-bench-server [ROUNDS] [SECONDS] [CONNECTIONS]
# The server runs on one worker thread pinned to core 0, wrk on one thread pinned to core 1.
# The routers are measured in turn, round after round, and the report gives the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:-axum-bench-server}
rounds=${2:-5}
seconds=${3:-8}
connections=${4:-32}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build -q --release -p examples --bin "$server"

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
taskset -c 0 "target/release/$server" "$work" > "$work/out" &
pid=$!
for _ in $(seq 1 100); do grep -qx ready "$work/out" && break; sleep 0.1; done
grep -qx ready "$work/out" || { echo "$server did not start" >&2; exit 1; }
grep -v '^ready$' "$work/out" > "$work/urls"
export BODY_FILE="$work/body.json" SIG_FILE="$work/signature"
echo "server: $server ($(wc -c < "$BODY_FILE")-byte body); wrk -t1 -c$connections -d${seconds}s, $rounds rounds"

while read -r name url; do
  # Every router must accept the delivery before it is measured.
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "X-AIRMY-Signature: $(cat "$SIG_FILE")" \
    -H 'Content-Type: application/json' --data-binary "@$BODY_FILE" "$url")
  [ "$code" = 200 ] || { echo "$name answered $code to the benchmark delivery" >&2; exit 1; }
done < "$work/urls"

for round in $(seq 1 "$rounds"); do
  while read -r name url; do
    out=$(taskset -c 1 wrk -t1 -c"$connections" -d"${seconds}s" --latency -s scripts/airmy-post.lua "$url")
    if grep -q "Non-2xx" <<<"$out"; then echo "$name: non-2xx answers during the run" >&2; echo "$out" >&2; exit 1; fi
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "$round $name $rps $p99" | tee -a "$work/results"
  done < "$work/urls"
done

python3 - "$work/results" <<'PY'
import statistics, sys
def us(t):
    for unit, f in (("us", 1), ("ms", 1000), ("s", 1e6)):
        if t.endswith(unit):
            return float(t[: -len(unit)]) * f
    raise ValueError(t)
rounds = {}
for line in open(sys.argv[1]):
    rnd, name, rps, p99 = line.split()
    rounds.setdefault(name, {})[rnd] = (float(rps), us(p99))
names = list(rounds)
def med(name, i):
    return statistics.median(v[i] for v in rounds[name].values())
def ratio(a, b):
    # Each round measures every router back to back: the ratio within a round cancels the
    # machine's slower drift; the median of those ratios is reported.
    return statistics.median(rounds[a][r][0] / rounds[b][r][0] for r in rounds[a] if r in rounds[b])
print("\n| router | req/s (median) | p99 latency (median) | vs hand-written (median of per-round ratios) | vs unverified JSON (same) |")
print("|---|---|---|---|---|")
for n in names:
    print(f"| {n} | {med(n, 0):,.0f} | {med(n, 1):,.0f} µs | {ratio(n, 'handwritten'):.3f}x | {ratio(n, 'insecure'):.3f}x |")
PY
