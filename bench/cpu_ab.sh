#!/usr/bin/env bash
# CPU per request of one service process, two checkouts alternated: the A/B
# behind most of docs/decisions/ (bench/README.md, "A/B pairs"). Each round
# starts the service of each checkout on its SCALE=1.0 bench database, warms
# it, and runs wrk three times;
# the figure is the process's CPU time (/proc, user + system) over requests
# served, with the process saturated. Needs `make bench`'s databases and ids.
#
#   bash bench/cpu_ab.sh OLD_DIR NEW_DIR SERVICE OPS [ROUNDS]
#   bash bench/cpu_ab.sh /tmp/old . reviews reviews,meta
#
# OLD_DIR: e.g. `git worktree add /tmp/old HEAD~1`; both run with this venv,
# or with the interpreters PY_OLD / PY_NEW (one checkout, two Pythons).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY_OLD=${PY_OLD:-$ROOT/.venv/bin/python}
PY_NEW=${PY_NEW:-$ROOT/.venv/bin/python}
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd); SVC=$3; OPS=$4; ROUNDS=${5:-2}
PORT=18950
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
wrk_run() { wrk -t1 -c32 -d"$1s" -s bench/lua/direct/mix.lua "http://127.0.0.1:$PORT" -- "$OPS"; }

measure() {  # label dir python
    (cd "$2" && env "${SVC^^}_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/atelier_${SVC}_bench" \
        PORT=$PORT "$3" -m "services.$SVC.app" >/dev/null 2>&1) &
    local shell=$!
    until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null; do sleep 0.2; done
    local pid
    pid=$(pgrep -f "services.$SVC.app" -n)
    wrk_run 4 >/dev/null
    for _ in 1 2 3; do
        local t0 t1 out n
        t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        out=$(wrk_run "$SECONDS_PER_RUN")
        t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        n=$(awk '/requests in/ {print $1}' <<<"$out")
        awk -v l="$1" -v n="$n" -v s="$SECONDS_PER_RUN" -v c=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
            'BEGIN {printf "%-4s %7.0f rps  %5.1f us of CPU per request\n", l, n / s, c * 1e6 / hz / n}'
    done
    kill "$pid"; wait "$shell" 2>/dev/null || true
}

for _ in $(seq "$ROUNDS"); do
    measure old "$OLD" "$PY_OLD"
    measure new "$NEW" "$PY_NEW"
done
