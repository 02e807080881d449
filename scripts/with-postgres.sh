#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL 15 server on a free loopback port, for the
# benchmarks in BENCHMARKS.md:
#   scripts/with-postgres.sh COMMAND [ARGS…]
# The server is Debian's `postgresql` (`initdb` into a temporary directory, as the `postgres`
# user when run as root), with its durable defaults (`fsync` and `synchronous_commit` on) and
# 200 connections; COMMAND runs with AIRMY_POSTGRES_URL set to it and PGBIN to its binaries.
# PG_OPTIONS adds server options (say "-c shared_preload_libraries=pg_stat_statements").
# The server is stopped and its directory removed when COMMAND ends.
set -euo pipefail
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$pgbin/initdb" ] || { echo "no PostgreSQL under $pgbin (apt-get install postgresql)" >&2; exit 2; }
dir=$(mktemp -d)
chmod 755 "$dir"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
trap 'as_pg "$pgbin/pg_ctl" -D "$dir/data" -m fast stop > /dev/null 2>&1 || true; rm -rf "$dir"' EXIT
as_pg "$pgbin/initdb" -D "$dir/data" -A trust -U postgres > /dev/null
as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_OPTIONS:-}" > /dev/null
echo "postgres on 127.0.0.1:$port: $(as_pg "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc \
  "SELECT version() || ', fsync ' || current_setting('fsync') || ', synchronous_commit ' || current_setting('synchronous_commit')")"
export AIRMY_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres" PGBIN=$pgbin
"$@"
