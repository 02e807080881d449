#!/usr/bin/env bash
# Instructions per request of `router-instructions` builds, in process, under callgrind:
#   scripts/router-instructions.sh NAME=BINARY [NAME=BINARY ...] [-- ROUTER ...]
# e.g. base=/tmp/ri-base spans=/tmp/ri-spans metrics=/tmp/ri-metrics (ROUTER_METRICS is passed
# through from the environment of each NAME given as NAME@prometheus=BINARY).
# Each router runs 1,000 and 3,000 requests; the difference divided by 2,000 is the cost of a
# request without the set-up. Printed with and without sha2's compression function (portable
# code under valgrind, where the real CPU uses SHA-NI).
set -euo pipefail
builds=()
routers=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; routers=("$@"); break; fi
  builds+=("$1"); shift
done
[ ${#routers[@]} -gt 0 ] || routers=(axum-layer actix-middleware axum-handwritten actix-extractor)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
count() { # binary router n metrics -> "total sha"
  local out="$work/cg.$RANDOM"
  ROUTER_METRICS="$4" valgrind --tool=callgrind --callgrind-out-file="$out" "$1" "$2" "$3" >/dev/null 2>&1
  callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
    awk '/PROGRAM TOTALS/ { gsub(",", "", $1); t = $1 }
         /sha2::sha256::compress256 / { gsub(",", "", $1); c = $1 }
         END { printf "%.0f %.0f\n", t, c }'
}
printf "%-18s %-10s %14s %14s\n" router build "per request" "without SHA"
for router in "${routers[@]}"; do
  for build in "${builds[@]}"; do
    name=${build%%=*}; bin=${build#*=}; metrics=
    case $name in *@prometheus) metrics=prometheus;; esac
    read -r t1 s1 < <(count "$bin" "$router" 1000 "$metrics")
    read -r t3 s3 < <(count "$bin" "$router" 3000 "$metrics")
    per=$(( (t3 - t1) / 2000 )); nosha=$(( ((t3 - s3) - (t1 - s1)) / 2000 ))
    printf "%-18s %-10s %14d %14d\n" "$router" "$name" "$per" "$nosha"
  done
done
