#!/usr/bin/env bash
# Accept throughput of a receiver with the durable inbox against the same receiver without
# one, in one run, on loopback:
#   scripts/inbox-load.sh axum-receiver|actix-receiver [ROUNDS] [N] [CONCURRENCY]
# Two receivers run (pinned to the cores in SERVER_CPUS, if set, such as 0) one with
# AIRMY_INBOX=sqlite:… (or, with INBOX=redis, a redis-server of its own with AOF
# `appendfsync ${REDIS_FSYNC:-always}`, pinned to REDIS_CPUS if set; with INBOX=postgres, the
# server of AIRMY_POSTGRES_URL, such as scripts/with-postgres.sh starts, its receivers writing
# their one effect row in the entry's transaction) and its workers, one without; `inbox-bench load` (pinned to CLIENT_CPUS,
# if set, such as 1) sends N unique signed 1 KiB deliveries,
# CONCURRENCY at a time, to each in turn, the order alternating from round to round. It prints
# every round's req/s, p50 and p99, and the median ratio of inbox to no-inbox req/s.
# INBOX_ENV adds environment to the inbox receiver only: INBOX_ENV=AIRMY_HANDLER_DELAY_MS=600000
# parks its workers in their first handlings, measuring accepts with no drain beside them.
# With INBOX=postgres PGBOUNCER=1, a third receiver ("pooled", INBOX_ENV too) stores through
# Debian's PgBouncer (/usr/sbin/pgbouncer) in transaction mode, started in front of the same
# server (AIRMY_INBOX=…?pooler=true, AIRMY_INBOX_LISTEN_URL the server's own URL), in every round
# beside the others; the summary adds its ratio to the direct inbox, and the accept -> handler
# p50 of each, direct and pooled (`inbox-bench latency 500`, in process).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-axum-receiver}
rounds=${2:-5}
n=${3:-20000}
concurrency=${4:-32}

cargo build -q --release -p examples --bin "$bin" --bin inbox-bench
release=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" $(cat "$work/pids" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
export AIRMY_WEBHOOK_SECRET=whsec_inbox_load_bench AIRMY_LISTEN=127.0.0.1:0
start() { # name, extra env...
  local name=$1; shift
  env "$@" ${SERVER_CPUS:+taskset -c $SERVER_CPUS} "$release/$bin" > "$work/$name.out" 2>/dev/null &
  echo $! >> "$work/pids" # (this runs in a subshell: the trap reads the file)
  for _ in $(seq 1 100); do grep -q '^listening on' "$work/$name.out" && break; sleep 0.1; done
  echo "$(sed -n 's/^listening on //p' "$work/$name.out" | head -1)/hooks/airmy"
}
plain=$(start plain)
if [ "${INBOX:-sqlite}" = redis ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ${REDIS_CPUS:+taskset -c $REDIS_CPUS} redis-server --port "$port" --bind 127.0.0.1 --save '' \
    --appendonly yes --appendfsync "${REDIS_FSYNC:-always}" --dir "$work" > /dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.1; done
  inbox=$(start inbox AIRMY_INBOX="redis://127.0.0.1:$port" ${INBOX_ENV:-})
  echo "redis-server on port $port, appendfsync ${REDIS_FSYNC:-always}"
elif [ "${INBOX:-sqlite}" = postgres ]; then
  : "${AIRMY_POSTGRES_URL:?INBOX=postgres needs AIRMY_POSTGRES_URL (scripts/with-postgres.sh)}"
  inbox=$(start inbox AIRMY_INBOX="$AIRMY_POSTGRES_URL" ${INBOX_ENV:-})
  if [ -n "${PGBOUNCER:-}" ]; then
    # PgBouncer as the tests start it (test-support's PgBouncer): transaction mode, loopback,
    # every client logged in as the server's user, at most 20 server connections.
    rest=${AIRMY_POSTGRES_URL#postgres://}; pguser=${rest%%@*}; rest=${rest#*@}
    pghost=${rest%%/*}; pgdb=${rest#*/}; pgdb=${pgdb%%\?*}
    bport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir "$work/pgbouncer"
    cat > "$work/pgbouncer/pgbouncer.ini" <<INI
[databases]
$pgdb = host=${pghost%:*} port=${pghost##*:} dbname=$pgdb user=$pguser
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = any
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = $work/pgbouncer/pgbouncer.log
pidfile = $work/pgbouncer/pgbouncer.pid
INI
    as_user=()
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$work/pgbouncer"; chmod 755 "$work"; as_user=(-u postgres); fi
    /usr/sbin/pgbouncer "${as_user[@]}" -q "$work/pgbouncer/pgbouncer.ini" &
    pids+=($!)
    for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$bport") 2>/dev/null && break; sleep 0.1; done
    bouncer="postgres://$pguser@127.0.0.1:$bport/$pgdb"
    pooled=$(start pooled AIRMY_INBOX="$bouncer?pooler=true" AIRMY_INBOX_LISTEN_URL="$AIRMY_POSTGRES_URL" ${INBOX_ENV:-})
    echo "pgbouncer (transaction mode) on port $bport; pooled inbox $pooled"
  fi
else
  inbox=$(start inbox AIRMY_INBOX="sqlite:$work/inbox.db" ${INBOX_ENV:-})
fi
echo "$bin: $rounds rounds x $n deliveries, $concurrency concurrent; no inbox $plain, inbox $inbox"
kinds="plain inbox${pooled:+ pooled}"
# Warm-up (not counted): connections, caches, the database file's first pages.
for url in "$plain" "$inbox" ${pooled:-}; do
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "$release/inbox-bench" load "$url" 2000 "$concurrency" > /dev/null
done
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order=$kinds; else order=$(tr ' ' '\n' <<<"$kinds" | tac | tr '\n' ' '); fi
  for which in $order; do
    case $which in plain) url=$plain ;; inbox) url=$inbox ;; pooled) url=$pooled ;; esac
    line=$(${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "$release/inbox-bench" load "$url" "$n" "$concurrency")
    rps=$(sed -E 's/.*: ([0-9]+) req\/s.*/\1/' <<<"$line")
    echo "$round $which $rps | $line" | tee -a "$work/results"
  done
done
if [ -n "${port:-}" ]; then
  # The same Redis, plain round trips: 1 KiB SETs and XADDs, CONCURRENCY clients.
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} redis-benchmark -p "$port" -c "$concurrency" -n "$n" -d 1024 -q -t set | tr '\r' '\n' | grep -a 'requests per second' | tail -1
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} redis-benchmark -p "$port" -c "$concurrency" -n "$n" -q XADD bench:xadd '*' i __rand_int__ | tr '\r' '\n' | grep -a 'requests per second' | tail -1
fi
if [ "${INBOX:-sqlite}" = postgres ]; then
  # The floor: the same server, a one-INSERT transaction (a unique 1 KiB row, as an accept
  # stores), CONCURRENCY clients, with pgbench on the load client's core.
  psql=("${PGBIN:-/usr/lib/postgresql/15/bin}/psql" -q "$AIRMY_POSTGRES_URL")
  "${psql[@]}" -c "CREATE TABLE IF NOT EXISTS pgbench_floor (id text PRIMARY KEY, body text)"
  echo "INSERT INTO pgbench_floor (id, body) VALUES (md5(random()::text || clock_timestamp()::text), repeat('x', 1024));" > "$work/insert.sql"
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "${PGBIN:-/usr/lib/postgresql/15/bin}/pgbench" -n -c "$concurrency" -j 1 \
    -t $((n / concurrency)) -M prepared -f "$work/insert.sql" "$AIRMY_POSTGRES_URL" 2>&1 | grep -E '^(latency average|tps)'
  "${psql[@]}" -c "DROP TABLE pgbench_floor"
fi
if [ -n "${pooled:-}" ]; then
  # Accept -> handler start, one delivery at a time, in process: direct, then through PgBouncer.
  AIRMY_INBOX=$AIRMY_POSTGRES_URL "$release/inbox-bench" latency 500 | sed 's/^/direct: /'
  AIRMY_INBOX="$bouncer?pooler=true" AIRMY_INBOX_LISTEN_URL=$AIRMY_POSTGRES_URL \
    "$release/inbox-bench" latency 500 | sed 's/^/through PgBouncer: /'
fi
python3 - "$work/results" <<'PY'
import statistics, sys, re
rows = [l.split(" | ")[0].split() for l in open(sys.argv[1])]
by = {}
for r, which, rps in rows:
    by.setdefault(r, {})[which] = float(rps)
ratios = [v["inbox"] / v["plain"] for v in by.values() if "inbox" in v and "plain" in v]
p99 = {w: [] for w in ("plain", "inbox", "pooled")}
for l in open(sys.argv[1]):
    m = re.search(r"p99 ([0-9.]+) ms", l)
    p99[l.split()[1]].append(float(m.group(1)))
print(f"median req/s: no inbox {statistics.median(v['plain'] for v in by.values()):.0f}, "
      f"inbox {statistics.median(v['inbox'] for v in by.values()):.0f}; "
      f"median ratio inbox / no inbox {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)}); "
      f"median p99: no inbox {statistics.median(p99['plain']):.2f} ms, inbox {statistics.median(p99['inbox']):.2f} ms")
pooled = [v["pooled"] / v["inbox"] for v in by.values() if "pooled" in v and "inbox" in v]
if pooled:
    print(f"through PgBouncer: median req/s {statistics.median(v['pooled'] for v in by.values()):.0f}; "
          f"median ratio pooled / direct inbox {statistics.median(pooled):.3f} (rounds: {', '.join(f'{r:.3f}' for r in pooled)}); "
          f"median p99 {statistics.median(p99['pooled']):.2f} ms")
PY
