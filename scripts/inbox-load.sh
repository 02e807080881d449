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
#
# Then, in the same run (issue 29): where one accept's time went (the inbox receiver's
# `airmy_webhook_inbox_accept_seconds` by stage and `…_batch_size`, read from its /metrics
# before and after the measured rounds: means over the rounds), the store's own floor F (the
# most accepts a second the store takes without us: SQLite, `inbox-bench sqlite-floor`, its
# batched insert rate in process; Redis, the accept script pipelined from 8 connections with
# redis-benchmark; PostgreSQL, pgbench running multi-row inserts of the batcher's mean batch
# size into a copy of the inbox's table, 4 clients as the batcher's 4 in flight), the disk
# (pg_test_fsync), and the limit no design on these shared cores can pass, F / (F + P) of the
# no-inbox rate P, with the inbox's share of it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-axum-receiver}
rounds=${2:-5}
n=${3:-20000}
concurrency=${4:-32}

cargo build -q --release -p examples --bin "$bin" --bin inbox-bench
target=${CARGO_TARGET_DIR:-target} # where cargo put them
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" $(cat "$work/pids" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
export AIRMY_WEBHOOK_SECRET=whsec_inbox_load_bench AIRMY_LISTEN=127.0.0.1:0
start() { # name, extra env...
  local name=$1; shift
  env "$@" ${SERVER_CPUS:+taskset -c $SERVER_CPUS} "$target/release/$bin" > "$work/$name.out" 2>/dev/null &
  echo $! >> "$work/pids" # (this runs in a subshell: the trap reads the file)
  for _ in $(seq 1 100); do grep -qs '^metrics on\|^listening on' "$work/$name.out" && [ "$name" = plain -o -n "$(grep '^metrics on' "$work/$name.out")" ] && break; sleep 0.1; done
  echo "$(sed -n 's/^listening on //p' "$work/$name.out" | head -1)/hooks/airmy"
}
metrics_snapshot() { # file
  curl -s "$(sed -n 's/^metrics on //p' "$work/inbox.out" | head -1)" > "$1" || true
}
plain=$(start plain)
if [ "${INBOX:-sqlite}" = redis ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ${REDIS_CPUS:+taskset -c $REDIS_CPUS} redis-server --port "$port" --bind 127.0.0.1 --save '' \
    --appendonly yes --appendfsync "${REDIS_FSYNC:-always}" --dir "$work" > /dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.1; done
  inbox=$(start inbox AIRMY_METRICS_LISTEN=127.0.0.1:0 AIRMY_INBOX="redis://127.0.0.1:$port" ${INBOX_ENV:-})
  echo "redis-server on port $port, appendfsync ${REDIS_FSYNC:-always}"
elif [ "${INBOX:-sqlite}" = postgres ]; then
  : "${AIRMY_POSTGRES_URL:?INBOX=postgres needs AIRMY_POSTGRES_URL (scripts/with-postgres.sh)}"
  inbox=$(start inbox AIRMY_METRICS_LISTEN=127.0.0.1:0 AIRMY_INBOX="$AIRMY_POSTGRES_URL" ${INBOX_ENV:-})
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
    pooled=$(start pooled AIRMY_METRICS_LISTEN=127.0.0.1:0 AIRMY_INBOX="$bouncer?pooler=true" AIRMY_INBOX_LISTEN_URL="$AIRMY_POSTGRES_URL" ${INBOX_ENV:-})
    echo "pgbouncer (transaction mode) on port $bport; pooled inbox $pooled"
  fi
else
  inbox=$(start inbox AIRMY_METRICS_LISTEN=127.0.0.1:0 AIRMY_INBOX="sqlite:$work/inbox.db" ${INBOX_ENV:-})
fi
echo "$bin: $rounds rounds x $n deliveries, $concurrency concurrent; no inbox $plain, inbox $inbox"
kinds="plain inbox${pooled:+ pooled}"
# Warm-up (not counted): connections, caches, the database file's first pages.
for url in "$plain" "$inbox" ${pooled:-}; do
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "$target"/release/inbox-bench load "$url" 2000 "$concurrency" > /dev/null
done
metrics_snapshot "$work/metrics.before"
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
[ "${INBOX:-sqlite}" = postgres ] && "$pgbin/psql" -qAt "$AIRMY_POSTGRES_URL" -c "SELECT pg_stat_reset_shared('wal')" > /dev/null
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order=$kinds; else order=$(tr ' ' '\n' <<<"$kinds" | tac | tr '\n' ' '); fi
  for which in $order; do
    case $which in plain) url=$plain ;; inbox) url=$inbox ;; pooled) url=$pooled ;; esac
    line=$(${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "$target"/release/inbox-bench load "$url" "$n" "$concurrency")
    rps=$(sed -E 's/.*: ([0-9]+) req\/s.*/\1/' <<<"$line")
    echo "$round $which $rps | $line" | tee -a "$work/results"
  done
done
metrics_snapshot "$work/metrics.after"
if [ "${INBOX:-sqlite}" = postgres ]; then
  # The server's WAL flushes during the measured rounds (their time with track_wal_io_timing=on,
  # as PG_OPTIONS="-c track_wal_io_timing=on" sets it).
  "$pgbin/psql" -qAt "$AIRMY_POSTGRES_URL" -c "SELECT 'pg_stat_wal over the rounds: ' || wal_records || ' records, ' || wal_sync || ' syncs (' || round(wal_sync_time::numeric / greatest(wal_sync, 1), 3) || ' ms each, track_wal_io_timing ' || current_setting('track_wal_io_timing') || '), ' || wal_write || ' writes' FROM pg_stat_wal"
fi
batch=$(python3 - "$work/metrics.before" "$work/metrics.after" <<'PY'
import re, sys
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r'airmy_webhook_inbox_accept_batch_size_(sum|count)\{[^}]*\} ([0-9.e+]+)', line)
        if m: out[m.group(1)] = float(m.group(2))
    return out
b, a = read(sys.argv[1]), read(sys.argv[2])
n = a.get("count", 0) - b.get("count", 0)
print(max(1, round((a.get("sum", 0) - b.get("sum", 0)) / n)) if n > 0 else 1)
PY
)
: > "$work/floor"
if [ -x "$pgbin/pg_test_fsync" ]; then
  # The disk under the stores (the work directory, as the SQLite and Redis files; PostgreSQL's
  # data directory is under the same temporary directory with scripts/with-postgres.sh).
  "$pgbin/pg_test_fsync" -s 2 -f "$work/pg_test_fsync.out" 2>&1 | grep -E '^\s+(fdatasync|open_datasync)' | head -2 | sed 's/^ */pg_test_fsync: /' | tee -a "$work/disk"
fi
if [ "${INBOX:-sqlite}" = redis ]; then
  # The floor: the inbox's accept script (the same Lua, as Scripts::new composes it), one
  # accept per EVALSHA, pipelined 16 deep from 8 connections, unique ids, 1 KiB bodies.
  sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat airmy-verify-inbox/src/redis/lua/prelude_now.lua airmy-verify-inbox/src/redis/lua/accept.lua)")
  body=$(head -c 1024 /dev/zero | tr '\0' x)
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} redis-benchmark -p "$port" -c 8 -P 16 -n "$n" -r 1000000000 -q \
    EVALSHA "$sha" 5 '{floor}s' '{floor}z' '{floor}d' '{floor}n' '{floor}l' '{floor}e:' 100000000 'evt___rand_int__' run.completed "$body" \
    | tr '\r' '\n' | grep -a 'requests per second' | tail -1 | tee "$work/redis-floor"
  sed -E 's/.*: ([0-9.]+) requests per second.*/\1/' "$work/redis-floor" > "$work/floor"
  # Plain round trips on the same server, for reference: 1 KiB SETs, CONCURRENCY clients.
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} redis-benchmark -p "$port" -c "$concurrency" -n "$n" -d 1024 -q -t set | tr '\r' '\n' | grep -a 'requests per second' | tail -1
elif [ "${INBOX:-sqlite}" = postgres ]; then
  # The floor: the same server, a copy of the inbox's table (its indexes included), one
  # INSERT … SELECT of $batch unique 1 KiB rows … ON CONFLICT DO NOTHING per transaction (the
  # batcher's mean batch size), 2 clients (the batcher's 2 statements in flight); and, for
  # reference, 16-row inserts from 2 clients (what the store takes in larger batches).
  psql=("$pgbin/psql" -q "$AIRMY_POSTGRES_URL")
  "${psql[@]}" -c "DROP TABLE IF EXISTS airmy_floor; CREATE TABLE airmy_floor (LIKE airmy_inbox.entries INCLUDING ALL)"
  echo "INSERT INTO airmy_floor (id, event_type, body, created_at, state, due_at) SELECT md5(random()::text || clock_timestamp()::text || g), 'run.completed', convert_to(repeat('x', 1024), 'UTF8'), '2026-12-08T00:00:00Z', 'pending', clock_timestamp() FROM generate_series(1, $batch) g ON CONFLICT (id) DO NOTHING;" > "$work/insert.sql"
  tps=$(${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "$pgbin/pgbench" -n -c 2 -j 1 -T 10 -M prepared -f "$work/insert.sql" "$AIRMY_POSTGRES_URL" 2>&1 | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
  echo "pgbench floor: $batch-row INSERT … SELECT per transaction, 2 clients, 10 s: $tps tps, $(python3 -c "print(round($tps * $batch))") rows/s"
  sed "s/generate_series(1, $batch)/generate_series(1, 16)/" "$work/insert.sql" > "$work/insert16.sql"
  tps16=$(${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "$pgbin/pgbench" -n -c 2 -j 1 -T 5 -M prepared -f "$work/insert16.sql" "$AIRMY_POSTGRES_URL" 2>&1 | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
  echo "pgbench, 16-row INSERT … SELECT per transaction, 2 clients, 5 s (for reference): $(python3 -c "print(round($tps16 * 16))") rows/s"
  python3 -c "print($tps * $batch)" > "$work/floor"
  # For reference, one row per transaction at CONCURRENCY clients (the old floor).
  echo "INSERT INTO airmy_floor (id, event_type, body, created_at, state, due_at) VALUES (md5(random()::text || clock_timestamp()::text), 'run.completed', convert_to(repeat('x', 1024), 'UTF8'), '2026-12-08T00:00:00Z', 'pending', clock_timestamp());" > "$work/insert1.sql"
  ${CLIENT_CPUS:+taskset -c $CLIENT_CPUS} "$pgbin/pgbench" -n -c "$concurrency" -j 1 -T 5 -M prepared -f "$work/insert1.sql" "$AIRMY_POSTGRES_URL" 2>&1 | sed -nE 's/^tps = ([0-9.]+).*/pgbench, one row per transaction, '"$concurrency"' clients: \1 tps/p'
  "${psql[@]}" -c "DROP TABLE airmy_floor"
else
  "$target"/release/inbox-bench sqlite-floor "$n" "$batch" | tee "$work/sqlite-floor"
  sed -E 's/.*: ([0-9.]+) rows\/s.*/\1/' "$work/sqlite-floor" > "$work/floor"
fi
if [ -n "${pooled:-}" ]; then
  # Accept -> handler start, one delivery at a time, in process: direct, then through PgBouncer.
  AIRMY_INBOX=$AIRMY_POSTGRES_URL "$target"/release/inbox-bench latency 500 | sed 's/^/direct: /'
  AIRMY_INBOX="$bouncer?pooler=true" AIRMY_INBOX_LISTEN_URL=$AIRMY_POSTGRES_URL \
    "$target"/release/inbox-bench latency 500 | sed 's/^/through PgBouncer: /'
fi
python3 - "$work/results" "$work/metrics.before" "$work/metrics.after" "$work/floor" <<'PY'
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
P = statistics.median(v['plain'] for v in by.values())
I = statistics.median(v['inbox'] for v in by.values())
print(f"median req/s: no inbox {P:.0f}, "
      f"inbox {I:.0f}; "
      f"median ratio inbox / no inbox {statistics.median(ratios):.3f} (rounds: {', '.join(f'{r:.3f}' for r in ratios)}); "
      f"median p99: no inbox {statistics.median(p99['plain']):.2f} ms, inbox {statistics.median(p99['inbox']):.2f} ms")
pooled = [v["pooled"] / v["inbox"] for v in by.values() if "pooled" in v and "inbox" in v]
if pooled:
    print(f"through PgBouncer: median req/s {statistics.median(v['pooled'] for v in by.values()):.0f}; "
          f"median ratio pooled / direct inbox {statistics.median(pooled):.3f} (rounds: {', '.join(f'{r:.3f}' for r in pooled)}); "
          f"median p99 {statistics.median(p99['pooled']):.2f} ms")
def read(path):
    out = {}
    for line in open(path):
        m = re.match(r'(airmy_webhook_inbox_accept_(?:seconds|batch_size))(_sum|_count)?\{([^}]*)\} ([0-9.e+-]+|NaN)', line)
        if not m: continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
        key = (m.group(1), labels.get("stage", "-"))
        part = m.group(2) or "q" + labels.get("quantile", "")
        out.setdefault(key, {})[part] = float(m.group(4))
    return out
before, after = read(sys.argv[2]), read(sys.argv[3])
print("where one accept's time went (means over the measured rounds; p50/p99 of the exporter's last minute):")
for key in sorted(after):
    a, b = after[key], before.get(key, {})
    n = a.get("_count", 0) - b.get("_count", 0)
    if n <= 0: continue
    mean = (a.get("_sum", 0) - b.get("_sum", 0)) / n
    if key[0].endswith("seconds"):
        print(f"  {key[1]:>6}: mean {mean*1e3:.3f} ms, p50 {a.get('q0.5', float('nan'))*1e3:.3f} ms, p99 {a.get('q0.99', float('nan'))*1e3:.3f} ms ({n:.0f} accepts)")
    else:
        print(f"  batch size: mean {mean:.1f}, p50 {a.get('q0.5', float('nan')):.0f}, p99 {a.get('q0.99', float('nan')):.0f} ({n:.0f} batches)")
stages = {k[1]: (after[k].get("_sum", 0) - before.get(k, {}).get("_sum", 0)) / max(1, after[k].get("_count", 0) - before.get(k, {}).get("_count", 0)) for k in after if k[0].endswith("seconds")}
if "total" in stages:
    rest = stages["total"] - sum(v for s, v in stages.items() if s != "total")
    print(f"  wake-up and the rest (total − the stages): mean {rest*1e3:.3f} ms")
try:
    F = float(open(sys.argv[4]).read().strip())
except ValueError:
    F = 0
if F > 0:
    limit = F / (F + P)
    share = (I / P) / limit
    print(f"P (no inbox) {P:.0f} req/s, F (the store's floor) {F:.0f} accepts/s, limit F/(F+P) = {limit:.3f} of P; "
          f"inbox {I:.0f} req/s = {I/P:.3f} of P = {share:.2f} of the limit")
PY
