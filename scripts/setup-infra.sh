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

# RabbitMQ's administrator for loupe's set-up and tests, never for a running process (each of
# those gets a user of its own from `loupe provision`, which `make setup` runs next and which
# then deletes `guest`). Its password is generated once into the secrets folder, mode 0600.
# Checked through the management API (milliseconds); rabbitmqctl (about a second a call) only
# runs when the check fails: a fresh broker, or a fresh clone whose new password it must take.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secrets_dir=${LOUPE_SECRETS_DIR:-$repo/.secrets}
admin_user=${LOUPE_RABBITMQ_ADMIN_USER:-loupe-admin}
admin_file="$secrets_dir/rabbitmq/$admin_user"
if [ ! -s "$admin_file" ]; then
  mkdir -p -m 700 "$secrets_dir" "$secrets_dir/rabbitmq"
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$admin_file")
fi
rabbit_admin_works() {
  python3 - "$admin_user" "$admin_file" <<'PY'
import base64, sys, urllib.request
user, path = sys.argv[1], sys.argv[2]
token = base64.b64encode(f"{user}:{open(path).read().strip()}".encode()).decode()
request = urllib.request.Request("http://127.0.0.1:15672/api/whoami")
request.add_header("Authorization", f"Basic {token}")
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.exit(0 if b'"administrator"' in response.read() else 1)
except Exception:
    sys.exit(1)
PY
}
if ! rabbit_admin_works; then
  need_root "creating RabbitMQ's administrator $admin_user"
  say "RabbitMQ administrator $admin_user (password in $admin_file)"
  # rabbitmqctl 3.10 takes the password only as an argument: on the command line for a moment.
  if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx "$admin_user"; then
    rabbitmqctl -q change_password "$admin_user" "$(cat "$admin_file")"
  else
    rabbitmqctl -q add_user "$admin_user" "$(cat "$admin_file")"
  fi
  rabbitmqctl -q set_user_tags "$admin_user" administrator
  for _ in $(seq 1 30); do rabbit_admin_works && break; sleep 1; done
  rabbit_admin_works || { echo "error: RabbitMQ's management API refuses $admin_user" >&2; exit 1; }
fi

# PostgreSQL: the Debian cluster listens on localhost by default. The set-up and the tests
# connect over the Unix socket as the invoking OS user's role (peer authentication, no
# password), which may create roles and databases: `loupe provision` gives each process a role
# of its own (password in the secrets folder) and each database to its role; the processes
# connect over TCP to 127.0.0.1 with those passwords (Debian's pg_hba: scram-sha-256).
if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main" {print $4}' | grep -q online; then
  need_root "starting PostgreSQL"
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect 15 main start
fi
db_user=$(id -un)
db_role=$(su postgres -c "psql -tAc \"select rolcreatedb and rolcreaterole from pg_roles where rolname = '$db_user'\"")
if [ "$db_role" != t ]; then
  need_root "letting PostgreSQL role $db_user create roles and databases"
  say "PostgreSQL role $db_user (the set-up's: may create roles and databases)"
  if [ -z "$db_role" ]; then
    su postgres -c "createuser --createdb --createrole $db_user"
  else
    su postgres -c "psql -qc 'ALTER ROLE \"$db_user\" CREATEDB CREATEROLE'"
  fi
fi
say "RabbitMQ and PostgreSQL are running"
