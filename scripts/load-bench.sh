#!/usr/bin/env bash
# Load benchmark of a receiver's routers on loopback with wrk, in one run:
#   scripts/load-bench.sh axum-bench-server [ROUNDS] [SECONDS] [CONNECTIONS]
# The server runs pinned to core 0 (one worker thread per router), wrk on one thread pinned to
# core 1. Every router is warmed up, then measured in turn, round after round; the starting
# router rotates from round to round so that none is always first. For each run it records
# wrk's req/s and p99 latency, and the server's CPU time per request (user + system time of all
# its threads from /proc/PID/stat, in clock ticks; the kernel counts time the host stole from
# this VM as steal, not as the server's).
# The report gives medians, and ratios as medians of the per-round ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${1:-axum-bench-server}
rounds=${2:-90}
seconds=${3:-1}
connections=${4:-32}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build -q --release -p examples --bin "$server"

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
taskset -c 0 "target/release/$server" "$work" > "$work/out" &
pid=$!
for _ in $(seq 1 100); do grep -qx ready "$work/out" && break; sleep 0.1; done
grep -qx ready "$work/out" || { echo "$server did not start" >&2; exit 1; }
mapfile -t names < <(grep -v '^ready$' "$work/out" | awk '{print $1}')
mapfile -t urls < <(grep -v '^ready$' "$work/out" | awk '{print $2}')
export BODY_FILE="$work/body.json" SIG_FILE="$work/signature"
echo "server: $server ($(wc -c < "$BODY_FILE")-byte body); wrk -t1 -c$connections -d${seconds}s, $rounds rounds, order rotated"

ticks_per_s=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' /proc/"$pid"/stat; }
run_wrk() { taskset -c 1 wrk -t1 -c"$connections" -d"$1" --latency -s scripts/airmy-post.lua "$2"; }

n=${#names[@]}
for i in $(seq 0 $((n - 1))); do
  # Every router must accept the delivery before it is measured; then a short warm-up.
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "X-AIRMY-Signature: $(cat "$SIG_FILE")" \
    -H 'Content-Type: application/json' --data-binary "@$BODY_FILE" "${urls[$i]}")
  [ "$code" = 200 ] || { echo "${names[$i]} answered $code to the benchmark delivery" >&2; exit 1; }
  run_wrk 1s "${urls[$i]}" > /dev/null
done

for round in $(seq 1 "$rounds"); do
  for k in $(seq 0 $((n - 1))); do
    i=$(( (k + round) % n ))
    before=$(cpu_ticks)
    out=$(run_wrk "${seconds}s" "${urls[$i]}")
    after=$(cpu_ticks)
    if grep -q "Non-2xx" <<<"$out"; then echo "${names[$i]}: non-2xx answers during the run" >&2; echo "$out" >&2; exit 1; fi
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu_us=$(awk -v d=$((after - before)) -v r="$requests" -v hz="$ticks_per_s" 'BEGIN { printf "%.3f", d / hz / r * 1e6 }')
    echo "$round ${names[$i]} $rps $p99 $cpu_us" | tee -a "$work/results"
  done
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
    rnd, name, rps, p99, cpu = line.split()
    rounds.setdefault(name, {})[rnd] = (float(rps), us(p99), float(cpu))
names = list(rounds)
def med(name, i):
    return statistics.median(v[i] for v in rounds[name].values())
def ratio(a, b, i, inverse=False):
    # Each round measures every router back to back: the ratio within a round cancels the
    # machine's slower drift; the median of those ratios is reported.
    rs = [rounds[a][r][i] / rounds[b][r][i] for r in rounds[a] if r in rounds[b]]
    m = statistics.median(rs)
    return 1 / m if inverse else m
print("\n| router | req/s (median) | p99 latency (median) | server CPU per request (median) "
      "| req/s vs hand-written | req/s vs unverified | CPU/request: hand-written ÷ this | CPU/request: unverified ÷ this |")
print("|---|---|---|---|---|---|---|---|")
for n in names:
    print(f"| {n} | {med(n, 0):,.0f} | {med(n, 1):,.0f} µs | {med(n, 2):.2f} µs "
          f"| {ratio(n, 'handwritten', 0):.3f}x | {ratio(n, 'insecure', 0):.3f}x "
          f"| {ratio(n, 'handwritten', 2, True):.3f}x | {ratio(n, 'insecure', 2, True):.3f}x |")
PY
