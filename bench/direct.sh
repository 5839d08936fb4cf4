#!/usr/bin/env bash
# One service process, wrk straight at it (no gateway): the per-service figures
# of issues 2-4. Needs the SCALE=1.0 bench databases (`make bench` loads them)
# and wrk. Each service: a fresh process and an empty Redis, a cold run (random
# products over all of them), a warm-up, then a hot run (a set of 1,000
# products); last, the bare-aiohttp ceiling.
#
#   bash bench/direct.sh [reviews overview qa]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SECONDS_PER_RUN=${SECONDS_PER_RUN:-12}
declare -A PORT=([overview]=18901 [reviews]=18902 [qa]=18903)

run_wrk() { wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" --latency -s "$1" "$2" | grep -E "Requests/sec|50%|99%|Non-2xx"; }

for svc in "${@:-reviews overview qa}"; do
    for s in $svc; do
        redis-cli FLUSHALL >/dev/null
        env "${s^^}_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/atelier_${s}_bench" \
            PORT="${PORT[$s]}" $PY -m "services.$s.app" >/dev/null 2>&1 &
        pid=$!
        trap 'kill $pid 2>/dev/null || true' EXIT
        until curl -fs "http://127.0.0.1:${PORT[$s]}/readyz" >/dev/null; do sleep 0.2; done
        echo "== $s cold"; run_wrk "bench/lua/direct/${s}_cold.lua" "http://127.0.0.1:${PORT[$s]}"
        wrk -t1 -c32 -d4s -s "bench/lua/direct/${s}_hot.lua" "http://127.0.0.1:${PORT[$s]}" >/dev/null
        echo "== $s hot"; run_wrk "bench/lua/direct/${s}_hot.lua" "http://127.0.0.1:${PORT[$s]}"
        kill $pid; wait $pid 2>/dev/null || true
    done
done
$PY -m bench.ceiling --port 18990 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until curl -fs http://127.0.0.1:18990/x >/dev/null; do sleep 0.2; done
echo "== ceiling (bare aiohttp, fixed bytes)"
wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" --latency http://127.0.0.1:18990/x | grep -E "Requests/sec|50%|99%"
