#!/usr/bin/env bash
# Make sure the local dependencies answer: PostgreSQL on 127.0.0.1:5432 (user
# postgres, trust over loopback), Redis on 127.0.0.1:6379, and the nginx and
# redis-server and pgbouncer binaries the stack and the tests start themselves.
# Reuses what runs; starts what is installed but stopped; as root on Debian,
# installs what is missing. Otherwise it says what is missing and fails.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
WANT=${*:-postgres redis nginx}

say() { echo "[deps] $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

APT_UPDATED=0
apt_install() {
    if ! is_root || ! have apt-get; then
        say "missing: $* (install it, or run this script as root on Debian/Ubuntu)"
        exit 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_answers() { psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }

ensure_postgres() {
    pg_answers && return 0
    if ! have pg_ctlcluster && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        apt_install postgresql postgresql-client
    fi
    have psql || apt_install postgresql-client
    if have pg_lsclusters && [ -z "$(pg_lsclusters -h 2>/dev/null)" ] && have pg_createcluster; then
        ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
        pg_createcluster "$ver" main >/dev/null
    fi
    if have pg_lsclusters; then
        pg_lsclusters -h | while read -r ver name port status _; do
            if [ "$status" != online ]; then
                say "starting postgres cluster $ver/$name"
                pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || true
            fi
        done
    fi
    for _ in $(seq 1 30); do pg_answers && return 0; sleep 0.5; done
    # A fresh Debian cluster asks for passwords on TCP: trust loopback for this
    # local development stack (never do this on a shared host).
    if is_root && have pg_lsclusters; then
        hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
        if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
            say "allowing trust auth on 127.0.0.1 in $hba"
            sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        fi
        pg_lsclusters -h | while read -r ver name _; do
            pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload || true
        done
        for _ in $(seq 1 20); do pg_answers && return 0; sleep 0.5; done
    fi
    say "postgres does not answer on $PGHOST:$PGPORT as user postgres"
    exit 1
}

ensure_redis() {
    have redis-server || apt_install redis-server
    have redis-cli || apt_install redis-tools
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    say "starting redis on 127.0.0.1:$REDIS_PORT"
    mkdir -p /tmp/runway-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir /tmp/runway-redis --logfile /tmp/runway-redis/redis.log
    for _ in $(seq 1 20); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.25; done
    say "redis does not answer on 127.0.0.1:$REDIS_PORT"
    exit 1
}

ensure_nginx() {
    have nginx || [ -x /usr/sbin/nginx ] || apt_install nginx
}

ensure_prometheus() {
    have prometheus && have promtool && return 0
    apt_install prometheus
    # Debian's package starts a system-wide instance on :9090; the stack runs its own.
    if have systemctl; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
    pkill -x prometheus >/dev/null 2>&1 || true
    pkill -f prometheus-node-exporter >/dev/null 2>&1 || true
}

ensure_wrk() { have wrk || apt_install wrk; }

# The exporters the stack runs beside nginx, Redis and Postgres (infra/exporters.py).
# Debian's packages start system-wide instances on 9113/9121/9187, the stack's
# own ports: stop and disable them.
EXPORTERS="prometheus-nginx-exporter prometheus-redis-exporter prometheus-postgres-exporter"
ensure_exporters() {
    missing=""
    for exporter in $EXPORTERS; do
        have "$exporter" || [ -x "/usr/bin/$exporter" ] || missing="$missing $exporter"
    done
    [ -z "$missing" ] && return 0
    # shellcheck disable=SC2086
    apt_install $missing
    for exporter in $missing; do
        if have systemctl; then systemctl disable --now "$exporter" >/dev/null 2>&1 || true; fi
    done
}

# PgBouncer (transaction pooling in front of Postgres): the stack and the tests
# start their own from a rendered config (infra/pgbouncer.py); Debian puts the
# binary in /usr/sbin. A system-wide instance the package may start on :6432
# would take the stack's port: stop it.
ensure_pgbouncer() {
    have pgbouncer || [ -x /usr/sbin/pgbouncer ] && return 0
    apt_install pgbouncer
    if have systemctl; then systemctl disable --now pgbouncer >/dev/null 2>&1 || true; fi
    if [ -f /run/postgresql/pgbouncer.pid ]; then
        kill "$(cat /run/postgresql/pgbouncer.pid)" >/dev/null 2>&1 || true
    fi
}

for dep in $WANT; do
    case "$dep" in
        postgres) ensure_postgres ;;
        redis) ensure_redis ;;
        nginx) ensure_nginx ;;
        prometheus) ensure_prometheus ;;
        wrk) ensure_wrk ;;
        exporters) ensure_exporters ;;
        pgbouncer) ensure_pgbouncer ;;
        *) say "unknown dependency $dep"; exit 2 ;;
    esac
done
say "ok: $WANT"
