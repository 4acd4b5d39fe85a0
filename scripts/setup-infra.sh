#!/usr/bin/env bash
# Installs and starts what loupe runs on: RabbitMQ and PostgreSQL from Debian's packages (and
# Chromium, which the browser test drives).
# Idempotent: a second run only checks. Everything listens on 127.0.0.1.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: $1 needs root (apt-get, service start); run as root or install it yourself" >&2
    exit 1
  fi
}

packages=()
command -v rabbitmq-server >/dev/null 2>&1 || packages+=(rabbitmq-server)
[ -x /usr/lib/postgresql/15/bin/postgres ] && command -v pg_ctlcluster >/dev/null 2>&1 || packages+=(postgresql)
# Debian's Chromium, for the headless-browser sign-in test (Playwright never downloads one).
[ -x /usr/bin/chromium ] || packages+=(chromium)
if [ "${#packages[@]}" -gt 0 ]; then
  need_root "installing ${packages[*]}"
  say "apt-get update (once)"
  apt-get update -q
  say "installing ${packages[*]} (a few minutes on a fresh machine)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"
fi

# RabbitMQ: loopback only, management API for queue depths, and a consumer timeout above the
# longest pricing (30 minutes in production; an unacknowledged delivery older than the timeout
# makes the broker close the consumer's channel). Rewritten when it differs; a running broker
# is restarted to take it.
rabbit_conf=/etc/rabbitmq/rabbitmq.conf
wanted_conf='# written by loupe scripts/setup-infra.sh
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
distribution.listener.interface = 127.0.0.1
loopback_users.guest = true
consumer_timeout = 3600000'
rabbit_restart=no
if [ "$(cat "$rabbit_conf" 2>/dev/null)" != "$wanted_conf" ]; then
  need_root "configuring RabbitMQ"
  say "configuring RabbitMQ (loopback only, management API, consumer timeout 1 h)"
  printf '%s\n' "$wanted_conf" > "$rabbit_conf"
  echo 'export ERL_EPMD_ADDRESS=127.0.0.1' > /etc/rabbitmq/rabbitmq-env.conf
  echo '[rabbitmq_management].' > /etc/rabbitmq/enabled_plugins
  rabbit_restart=yes
fi
if [ "$rabbit_restart" = yes ] && rabbitmqctl -q status >/dev/null 2>&1; then
  say "restarting RabbitMQ for its new configuration"
  rabbitmqctl -q stop >/dev/null
fi
if ! rabbitmqctl -q status >/dev/null 2>&1; then
  say "starting RabbitMQ"
  ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached
  for _ in $(seq 1 60); do
    rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 1
  done
  rabbitmqctl -q await_startup >/dev/null || { echo "error: RabbitMQ did not start; see /var/log/rabbitmq/" >&2; exit 1; }
fi
for vhost in loupe; do
  if ! rabbitmqctl -q list_vhosts | grep -qx "$vhost"; then
    rabbitmqctl -q add_vhost "$vhost"
    rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
  fi
done
if ! rabbitmqctl -q list_users | grep -q '^guest.*monitoring'; then
  rabbitmqctl -q set_user_tags guest administrator monitoring >/dev/null
fi

# PostgreSQL: the Debian cluster listens on localhost by default; loupe connects over the
# Unix socket as the invoking OS user (peer authentication), so no password exists to leak.
if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main" {print $4}' | grep -q online; then
  need_root "starting PostgreSQL"
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect 15 main start
fi
db_user=$(id -un)
if ! su postgres -c "psql -tAc \"select 1 from pg_roles where rolname = '$db_user'\"" | grep -q 1; then
  say "creating PostgreSQL role $db_user (may create its own databases)"
  su postgres -c "createuser --createdb $db_user"
fi
say "RabbitMQ and PostgreSQL are running"
