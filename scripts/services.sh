#!/usr/bin/env bash
# Checks every backend Lizards' tests use against real servers, starts what
# is missing, and fails loudly with the reason. Prints the environment to
# export (AMQP_URL, DATABASE_URL, MONGODB_URI, REDIS_URL) on success:
#   eval "$(scripts/services.sh)"
set -euo pipefail

log() { printf '%s\n' "$*" >&2; }
fail() { log "services.sh: $*"; exit 1; }

PG_HOST=127.0.0.1 PG_PORT=5432 PG_DB=test
REDIS_PORT=6379 AMQP_PORT=5672 MONGO_PORT=27017
SECANTUS_VERSION=0.7.0b3
STATE_DIR="${LIZARDS_SERVICES_DIR:-/tmp/lizards-services}"
mkdir -p "$STATE_DIR"

wait_for() { # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  for _ in $(seq 1 $((seconds * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PostgreSQL (trust auth, database `test`).
if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
  log "PostgreSQL is down; starting it"
  command -v pg_ctlcluster >/dev/null || fail "PostgreSQL is not running and pg_ctlcluster is not installed"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start >&2 \
    || fail "pg_ctlcluster could not start PostgreSQL"
  wait_for postgres 30 pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || fail "PostgreSQL did not come up on $PG_PORT"
fi
psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d "$PG_DB" -qtAc 'select 1' >/dev/null 2>&1 \
  || fail "PostgreSQL is up but database '$PG_DB' is not reachable as user postgres (trust auth expected)"

# Redis.
if ! port_open "$REDIS_PORT"; then
  log "Redis is down; starting it"
  command -v redis-server >/dev/null || fail "Redis is not running and redis-server is not installed"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$STATE_DIR" --logfile "$STATE_DIR/redis.log" >&2 || fail "redis-server did not start"
  wait_for redis 15 port_open "$REDIS_PORT" || fail "Redis did not come up on $REDIS_PORT"
fi

# RabbitMQ (guest/guest).
if ! port_open "$AMQP_PORT"; then
  log "RabbitMQ is down; starting it"
  command -v rabbitmq-server >/dev/null || fail "RabbitMQ is not running and rabbitmq-server is not installed"
  rabbitmq-server -detached >&2 || true
  wait_for rabbitmq 90 port_open "$AMQP_PORT" || fail "RabbitMQ did not come up on $AMQP_PORT"
fi
if command -v rabbitmqctl >/dev/null; then
  # The app may be stopped (a fault test stops it): start it again.
  if ! rabbitmqctl -q status >/dev/null 2>&1 || ! port_open "$AMQP_PORT"; then
    rabbitmqctl -q start_app >&2 || fail "rabbitmqctl start_app failed"
  fi
fi

# MongoDB wire protocol: the secantusdb test server from PyPI.
if ! port_open "$MONGO_PORT"; then
  if ! command -v secantusd-py >/dev/null; then
    log "installing secantusdb==$SECANTUS_VERSION"
    python3 -m pip install -q "secantusdb==$SECANTUS_VERSION" >&2 || fail "pip install secantusdb failed"
  fi
  command -v secantusd-py >/dev/null || fail "secantusd-py not on PATH after install"
  log "starting secantusd-py on $MONGO_PORT"
  nohup secantusd-py --host 127.0.0.1 --port "$MONGO_PORT" --storage-path :memory: \
    >"$STATE_DIR/secantus.log" 2>&1 &
  wait_for mongo 30 port_open "$MONGO_PORT" || fail "secantusd-py did not come up (log: $STATE_DIR/secantus.log)"
fi

cat <<ENV
export DATABASE_URL=postgres://postgres@$PG_HOST:$PG_PORT/$PG_DB
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f
export MONGODB_URI=mongodb://127.0.0.1:$MONGO_PORT
ENV
log "services.sh: PostgreSQL, Redis, RabbitMQ and MongoDB (secantusdb) are up"
