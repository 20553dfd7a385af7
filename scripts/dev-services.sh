#!/usr/bin/env bash
# Makes sure the services Gauntlet's tests talk to are up on this machine:
# PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379), RabbitMQ (127.0.0.1:5672).
# A service that is installed but stopped is started. One that is missing is
# installed from Debian's packages when we are root; under CI=true a service
# that still cannot be reached is a failure, never a skip.
#
#   scripts/dev-services.sh          check and start
#   scripts/dev-services.sh status   only report
set -uo pipefail

mode=${1:-ensure}
failed=0

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    port_open "$1" && return 0
    sleep 0.2
  done
  return 1
}

apt_install() {
  [ "$(id -u)" = 0 ] || return 1
  command -v apt-get >/dev/null || return 1
  echo "installing $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  port_open 5432 && return 0
  [ "$mode" = status ] && return 1
  command -v pg_ctlcluster >/dev/null || apt_install postgresql || return 1
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  [ -n "$version" ] || return 1
  # Tests connect as postgres over TCP without a password.
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ -f "$hba" ] && ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1
  wait_port 5432 30
}

ensure_redis() {
  port_open 6379 && return 0
  [ "$mode" = status ] && return 1
  command -v redis-server >/dev/null || apt_install redis-server || return 1
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 6379 15
}

ensure_rabbitmq() {
  if port_open 5672; then
    command -v rabbitmqctl >/dev/null && return 0
    return 1
  fi
  [ "$mode" = status ] && return 1
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server || return 1
  rabbitmq-server -detached >/dev/null 2>&1
  wait_port 5672 90 || return 1
  # The port opens before the broker accepts vhost commands.
  local i
  for ((i = 0; i < 30; i++)); do
    rabbitmqctl -q list_vhosts >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

for svc in postgres redis rabbitmq; do
  if "ensure_$svc"; then
    echo "$svc: up"
  else
    echo "$svc: NOT reachable" >&2
    failed=1
  fi
done

if [ "$failed" = 1 ]; then
  if [ "${CI:-}" = true ]; then
    echo "a required service is missing: failing (CI=true)" >&2
    exit 1
  fi
  echo "warning: integration tests will fail without these services" >&2
fi
exit 0
