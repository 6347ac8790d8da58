#!/usr/bin/env bash
# Local stack for pc-reserve-poller: MariaDB (Envisionware), PostgreSQL (Sierra and the
# local "Redshift"), moto (KMS, Kinesis, S3) and the PcReserve schema server.
#
#   scripts/local-stack.sh up       start/create everything (idempotent, safe to rerun)
#   scripts/local-stack.sh down     stop moto and the schema server (not the databases)
#   scripts/local-stack.sh status   one line per part; exit 1 when a part is not up
#   scripts/local-stack.sh reset    empty the Kinesis stream and the S3 state bucket (keeps the config)
#   scripts/local-stack.sh env      print .local/env (source it: eval "$(scripts/local-stack.sh env)")
#
# Ports: PCR_MOTO_PORT (5055), PCR_SCHEMA_PORT (5056), PCR_MYSQL_PORT (3306), PCR_PG_PORT (5432).
# PCR_DEMO_BCRYPT_COST (4): cost of the generated BCRYPT_SALT. PCR_PYTHON: python for the venv.
# Progress goes to stderr. See scripts/README.md.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPTS_DIR/../.." && pwd)
LOCAL="$ROOT/.local"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
MOTO_PORT=${PCR_MOTO_PORT:-5055}
SCHEMA_PORT=${PCR_SCHEMA_PORT:-5056}
MYSQL_PORT=${PCR_MYSQL_PORT:-3306}
PG_PORT=${PCR_PG_PORT:-5432}
SCHEMA_URL="http://127.0.0.1:$SCHEMA_PORT/api/v0.1/current-schemas/PcReserve"
AWS_URL="http://127.0.0.1:$MOTO_PORT"
REDSHIFT_DB=dev

export PCR_MOTO_PORT=$MOTO_PORT PCR_SCHEMA_PORT=$SCHEMA_PORT PCR_MYSQL_PORT=$MYSQL_PORT PCR_PG_PORT=$PG_PORT
export AWS_ENDPOINT_URL=$AWS_URL PCR_TEST_AWS_ENDPOINT=$AWS_URL
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN || true
export PCR_TEST_MYSQL_ADMIN_URL="mysql://pcr_admin:pcr_admin@127.0.0.1:$MYSQL_PORT"
export PCR_TEST_PG_ADMIN_URL="postgres://pcr_admin:pcr_admin@127.0.0.1:$PG_PORT"
export DEBIAN_FRONTEND=noninteractive

say() { echo "local-stack: $*" >&2; }
die() { echo "local-stack: error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else die "needs root (or passwordless sudo) for: $*"; fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* yourself"
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2 \
    || die "apt-get install $* failed"
}

port_open() { timeout 2 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_port() { # port name seconds
  local i
  for ((i = 0; i < $3 * 2; i++)); do port_open "$1" && return 0; sleep 0.5; done
  die "$2 is not listening on 127.0.0.1:$1 after $3 s"
}

# ---------------------------------------------------------------- MariaDB
MYSQL_TCP=(mysql --protocol=TCP -h 127.0.0.1 -P "$MYSQL_PORT" --connect-timeout=10 --default-character-set=utf8mb4 -N -B)
my_admin() { MYSQL_PWD=pcr_admin "${MYSQL_TCP[@]}" -u pcr_admin "$@"; }

ensure_mariadb() {
  if ! port_open "$MYSQL_PORT"; then
    local bin=/usr/sbin/mariadbd
    [ -x "$bin" ] || bin=/usr/sbin/mysqld
    if [ ! -x "$bin" ]; then apt_install mariadb-server mariadb-client; bin=/usr/sbin/mariadbd; [ -x "$bin" ] || bin=/usr/sbin/mysqld; fi
    if ! port_open "$MYSQL_PORT"; then
      say "mariadb: starting"
      as_root install -d -o mysql -g mysql -m 0755 /run/mysqld
      if [ ! -d /var/lib/mysql/mysql ]; then
        say "mariadb: initialising /var/lib/mysql"
        as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >&2
      fi
      as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- --user=mysql >&2
      wait_port "$MYSQL_PORT" MariaDB 60
    fi
  fi
  command -v mysql >/dev/null 2>&1 || apt_install mariadb-client
  say "mariadb: up on 127.0.0.1:$MYSQL_PORT"
}

mariadb_accounts_sql() {
  local h
  for h in '%' 'localhost' '127.0.0.1'; do
    cat <<SQL
CREATE USER IF NOT EXISTS 'pcr_admin'@'$h' IDENTIFIED BY 'pcr_admin';
ALTER USER 'pcr_admin'@'$h' IDENTIFIED BY 'pcr_admin';
GRANT ALL PRIVILEGES ON *.* TO 'pcr_admin'@'$h' WITH GRANT OPTION;
SQL
  done
}

mariadb_setup() {
  if ! my_admin -e 'SELECT 1' >/dev/null 2>&1; then
    say "mariadb: creating admin account pcr_admin"
    if env -u MYSQL_PWD "${MYSQL_TCP[@]}" -u root -e 'SELECT 1' >/dev/null 2>&1; then
      mariadb_accounts_sql | env -u MYSQL_PWD "${MYSQL_TCP[@]}" -u root
    elif mariadb_accounts_sql | as_root env -u MYSQL_PWD mysql -u root --connect-timeout=10 2>/dev/null; then
      : # unix_socket auth as root (fresh Debian)
    else
      die "mariadb: cannot log in as pcr_admin, nor as root over TCP or the socket"
    fi
    my_admin -e 'SELECT 1' >/dev/null || die "mariadb: pcr_admin still cannot log in over TCP"
  fi
  mariadb_accounts_sql | my_admin
  {
    echo "CREATE DATABASE IF NOT EXISTS lasttwodays CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
    local h
    for h in '%' 'localhost' '127.0.0.1'; do
      cat <<SQL
CREATE USER IF NOT EXISTS 'pcr_reader'@'$h' IDENTIFIED BY 'pcr-reader-pw';
ALTER USER 'pcr_reader'@'$h' IDENTIFIED BY 'pcr-reader-pw';
GRANT SELECT ON lasttwodays.* TO 'pcr_reader'@'$h';
SQL
    done
  } | my_admin
  my_admin -D lasttwodays <"$SCRIPTS_DIR/sql/envisionware.sql"
  say "mariadb: accounts pcr_admin, pcr_reader; lasttwodays.strad_bci ready"
}

# ------------------------------------------------------------- PostgreSQL
pg_admin() { # [db] then psql args
  local db=$1; shift
  PGOPTIONS="-c client_min_messages=warning" PGPASSWORD=pcr_admin PGCONNECT_TIMEOUT=10 psql -w -X -q -A -t -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U pcr_admin -d "$db" "$@"
}

ensure_postgres() {
  if ! port_open "$PG_PORT"; then
    if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; fi
    if ! port_open "$PG_PORT"; then
      local ver
      ver=$(ls /etc/postgresql | sort -V | tail -n 1)
      [ -n "$ver" ] || die "postgres: no cluster under /etc/postgresql"
      say "postgres: starting cluster $ver/main"
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
      wait_port "$PG_PORT" PostgreSQL 60
    fi
  fi
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  say "postgres: up on 127.0.0.1:$PG_PORT"
}

PG_ADMIN_SQL="DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pcr_admin') THEN CREATE ROLE pcr_admin; END IF; END\$\$;
ALTER ROLE pcr_admin LOGIN SUPERUSER PASSWORD 'pcr_admin';"

postgres_setup() {
  if [ "$(pg_admin postgres -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" != t ]; then
    say "postgres: creating admin role pcr_admin"
    if PGCONNECT_TIMEOUT=10 psql -w -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -c "$PG_ADMIN_SQL" >/dev/null 2>&1; then
      : # trust over TCP
    elif (cd /tmp && as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres \
        -c "$PG_ADMIN_SQL") >/dev/null; then
      : # peer over the socket (fresh Debian)
    else
      die "postgres: cannot create pcr_admin (neither trust over TCP nor runuser postgres worked)"
    fi
    [ "$(pg_admin postgres -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user')" = t ] \
      || die "postgres: pcr_admin cannot log in over TCP as a superuser"
  fi
  local db
  for db in iii "$REDSHIFT_DB"; do
    if [ "$(pg_admin postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
      pg_admin postgres -c "CREATE DATABASE $db ENCODING 'UTF8' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
      say "postgres: created database $db"
    fi
  done
  pg_admin postgres -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pcr_reader') THEN CREATE ROLE pcr_reader; END IF; END\$\$;" \
    -c "ALTER ROLE pcr_reader LOGIN NOSUPERUSER PASSWORD 'pcr-reader-pw'" \
    -c "GRANT CONNECT ON DATABASE iii, $REDSHIFT_DB TO pcr_reader"
  pg_admin iii -f "$SCRIPTS_DIR/sql/sierra.sql"
  pg_admin iii -c "GRANT USAGE ON SCHEMA sierra_view TO pcr_reader" \
    -c "GRANT SELECT ON ALL TABLES IN SCHEMA sierra_view TO pcr_reader"
  sed -e "s/{{PATRON_INFO_TABLE}}/patron_info_$REDSHIFT_DB/g" -e "s/{{PC_RESERVE_TABLE}}/pc_reserve_$REDSHIFT_DB/g" \
    "$SCRIPTS_DIR/sql/redshift.sql" | pg_admin "$REDSHIFT_DB" -f -
  pg_admin "$REDSHIFT_DB" -c "GRANT USAGE ON SCHEMA public TO pcr_reader" \
    -c "GRANT SELECT ON public.patron_info_$REDSHIFT_DB, public.pc_reserve_$REDSHIFT_DB TO pcr_reader"
  say "postgres: roles pcr_admin, pcr_reader; iii.sierra_view.*, $REDSHIFT_DB.public.patron_info_$REDSHIFT_DB ready"
}

# ------------------------------------------------------------ Python venv
ensure_venv() {
  local base=${PCR_PYTHON:-python3}
  if ! [ -x "$PY" ] || ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    command -v "$base" >/dev/null 2>&1 || { apt_install python3 python3-venv; base=python3; }
    say "venv: creating .venv"
    rm -rf "$VENV"
    if ! "$base" -m venv "$VENV" >&2; then
      rm -rf "$VENV"
      apt_install python3-venv
      "$base" -m venv "$VENV" >&2 || die "python3 -m venv failed even after installing python3-venv"
    fi
  fi
  local stamp="$VENV/.pcr-requirements.sha256" want
  want=$(sha256sum "$SCRIPTS_DIR/requirements.txt" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || ! [ -x "$VENV/bin/moto_server" ]; then
    say "venv: pip install -r scripts/local-stack/requirements.txt"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$PY" -m pip install -q --default-timeout=60 \
      -r "$SCRIPTS_DIR/requirements.txt" >&2 || die "pip install failed"
    echo "$want" >"$stamp"
  else
    say "venv: requirements unchanged"
  fi
}

# ------------------------------------------------------- background jobs
pid_alive() { # pidfile pattern
  local pid
  pid=$(cat "$1" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

stop_job() { # name pidfile pattern
  local pid i
  if pid_alive "$2" "$3"; then
    pid=$(cat "$2")
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do pid_alive "$2" "$3" || break; sleep 0.25; done
    if pid_alive "$2" "$3"; then kill -9 "$pid" 2>/dev/null || true; fi
    say "$1: stopped (pid $pid)"
  else
    say "$1: not running (no live pid file)"
  fi
  rm -f "$2"
}

start_job() { # pidfile logfile cmd...
  local pidfile=$1 logfile=$2; shift 2
  rm -f "$pidfile"
  # setsid: own session, survives the caller's process group; the pid is written by the child.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  local i
  for ((i = 0; i < 40; i++)); do [ -s "$pidfile" ] && return 0; sleep 0.05; done
  die "could not start: $*"
}

http_ok() { "$PY" -c 'import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)' "$1"; }

# Exit 0 when the URL serves this checkout's PcReserve schema response (the same JSON as
# tests/fixtures/PcReserve-schema-response.json); otherwise print why, in one line.
schema_ok() { "$PY" -c 'import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        body = json.loads(r.read())
except Exception as e:
    print(f"GET {sys.argv[1]} failed ({type(e).__name__}: {e})"); sys.exit(1)
with open(sys.argv[2]) as f:
    want = json.load(f)
if body != want:
    print(f"GET {sys.argv[1]} answers something else than tests/fixtures/PcReserve-schema-response.json"); sys.exit(1)' \
    "$1" "$ROOT/tests/fixtures/PcReserve-schema-response.json"; }

# The pid listening on 127.0.0.1:PORT, if it can be found (ss, lsof, then /proc).
port_pid() {
  local port=$1 pid="" hex inode fd
  if command -v ss >/dev/null 2>&1; then
    pid=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2)
  fi
  if [ -z "$pid" ] && command -v lsof >/dev/null 2>&1; then
    pid=$(lsof -nP -t -iTCP:"$port" -sTCP:LISTEN 2>/dev/null | head -n 1)
  fi
  if [ -z "$pid" ]; then
    hex=$(printf '%04X' "$port")
    inode=$(awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" { print $10; exit }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    if [ -n "$inode" ]; then
      for fd in /proc/[0-9]*/fd/*; do
        if [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ]; then
          pid=${fd#/proc/}; pid=${pid%%/*}; break
        fi
      done
    fi
  fi
  echo "$pid"
}

# "pid N (command line)" of the process listening on PORT, or what is known.
port_holder() {
  local pid cmd
  pid=$(port_pid "$1")
  if [ -z "$pid" ]; then
    echo "a process this user cannot see (try: sudo ss -ltnp 'sport = :$1')"
    return
  fi
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-160 | sed 's/ *$//')
  echo "pid $pid (${cmd:-command line not readable})"
}

# Dies naming the process on PORT and what to do. $1 port, $2 env var, $3 what is wrong.
die_port_taken() {
  local pid
  pid=$(port_pid "$1")
  die "port $1 is held by $(port_holder "$1"), which $3; stop it${pid:+ (kill $pid)} or choose a free port: $2=<port> scripts/local-stack.sh up"
}

MOTO_STARTED=0
ensure_moto() {
  local why
  if "$PY" "$SCRIPTS_DIR/local_aws.py" ping; then
    # A ping proves little: a moto left over from another (perhaps deleted) checkout
    # answers it and fails real calls. Reuse only a server that serves them.
    if why=$("$PY" "$SCRIPTS_DIR/local_aws.py" probe); then
      say "moto: already answering on $AWS_URL"
      return 0
    fi
    if pid_alive "$LOCAL/moto.pid" moto_server && [ "$(port_pid "$MOTO_PORT")" = "$(cat "$LOCAL/moto.pid")" ]; then
      say "moto: this checkout's server answers but fails a real call ($why): restarting it"
      stop_job moto "$LOCAL/moto.pid" moto_server
    else
      die_port_taken "$MOTO_PORT" PCR_MOTO_PORT "answers like moto but does not work for this checkout: $why"
    fi
  fi
  port_open "$MOTO_PORT" && die_port_taken "$MOTO_PORT" PCR_MOTO_PORT "is not a moto server"
  say "moto: starting on $AWS_URL (log .local/moto.log)"
  start_job "$LOCAL/moto.pid" "$LOCAL/moto.log" "$PY" "$SCRIPTS_DIR/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT"
  local i
  for ((i = 0; i < 60; i++)); do
    "$PY" "$SCRIPTS_DIR/local_aws.py" ping && { MOTO_STARTED=1; return 0; }
    pid_alive "$LOCAL/moto.pid" moto_server || { tail -n 20 "$LOCAL/moto.log" >&2; die "moto exited"; }
    sleep 0.5
  done
  tail -n 20 "$LOCAL/moto.log" >&2
  die "moto did not answer within 30 s"
}

ensure_schema_server() {
  local why
  if why=$(schema_ok "$SCHEMA_URL"); then
    say "schema: already answering on $SCHEMA_URL"
    return 0
  fi
  if port_open "$SCHEMA_PORT"; then
    if pid_alive "$LOCAL/schema.pid" schema_server.py && [ "$(port_pid "$SCHEMA_PORT")" = "$(cat "$LOCAL/schema.pid")" ]; then
      say "schema: this checkout's server does not serve the schema ($why): restarting it"
      stop_job schema "$LOCAL/schema.pid" schema_server.py
    else
      die_port_taken "$SCHEMA_PORT" PCR_SCHEMA_PORT "does not serve this checkout's schema: $why"
    fi
  fi
  say "schema: starting on $SCHEMA_URL (log .local/schema.log)"
  start_job "$LOCAL/schema.pid" "$LOCAL/schema.log" "$PY" "$SCRIPTS_DIR/schema_server.py" --host 127.0.0.1 --port "$SCHEMA_PORT"
  local i
  for ((i = 0; i < 40; i++)); do
    schema_ok "$SCHEMA_URL" >/dev/null && return 0
    pid_alive "$LOCAL/schema.pid" schema_server.py || { tail -n 20 "$LOCAL/schema.log" >&2; die "schema server exited"; }
    sleep 0.25
  done
  die "schema server did not answer within 10 s"
}

write_env() {
  local tmp="$LOCAL/env.tmp"
  cat >"$tmp" <<EOF
# Generated by scripts/local-stack.sh: source it (or eval "\$(scripts/local-stack.sh env)").
export AWS_ENDPOINT_URL=$AWS_URL
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export ENVIRONMENT=local
export PCR_TEST_MYSQL_ADMIN_URL=$PCR_TEST_MYSQL_ADMIN_URL
export PCR_TEST_PG_ADMIN_URL=$PCR_TEST_PG_ADMIN_URL
export PCR_TEST_SCHEMA_URL=$SCHEMA_URL
export PCR_TEST_AWS_ENDPOINT=$AWS_URL
EOF
  if cmp -s "$tmp" "$LOCAL/env"; then rm -f "$tmp"; else mv "$tmp" "$LOCAL/env"; say "wrote .local/env"; fi
}

cmd_up() {
  mkdir -p "$LOCAL"
  exec 9>"$LOCAL/lock"
  flock -w 600 9 || die "another local-stack.sh holds .local/lock"
  # moto and the schema server first: a port held by something else stops here, at once.
  ensure_venv
  ensure_moto
  ensure_schema_server
  ensure_mariadb
  mariadb_setup
  ensure_postgres
  postgres_setup
  if [ "$MOTO_STARTED" = 1 ]; then
    "$PY" "$SCRIPTS_DIR/local_aws.py" setup --fresh
  else
    "$PY" "$SCRIPTS_DIR/local_aws.py" setup
  fi
  write_env
  say "up: done: ENVIRONMENT=local reads config/local.yaml (it names the local endpoint and credentials; .local/env is for the Python scripts and tests)"
}

cmd_down() {
  stop_job moto "$LOCAL/moto.pid" moto_server
  stop_job schema "$LOCAL/schema.pid" schema_server.py
}

cmd_status() {
  local ok=0 n
  if port_open "$MYSQL_PORT" && n=$(my_admin -D lasttwodays -e 'SELECT COUNT(*) FROM strad_bci' 2>/dev/null); then
    echo "mariadb:  up 127.0.0.1:$MYSQL_PORT, lasttwodays.strad_bci $n rows"
  else echo "mariadb:  DOWN or not set up (127.0.0.1:$MYSQL_PORT)"; ok=1; fi
  if port_open "$PG_PORT" && n=$(pg_admin iii -c 'SELECT COUNT(*) FROM sierra_view.phrase_entry' 2>/dev/null) \
      && m=$(pg_admin "$REDSHIFT_DB" -c "SELECT COUNT(*) FROM patron_info_$REDSHIFT_DB" 2>/dev/null); then
    echo "postgres: up 127.0.0.1:$PG_PORT, iii phrase_entry $n rows, $REDSHIFT_DB patron_info_$REDSHIFT_DB $m rows"
  else echo "postgres: DOWN or not set up (127.0.0.1:$PG_PORT)"; ok=1; fi
  if [ -x "$VENV/bin/moto_server" ]; then echo "venv:     ok (.venv)"; else echo "venv:     MISSING"; ok=1; fi
  if [ -x "$PY" ] && "$PY" "$SCRIPTS_DIR/local_aws.py" ping; then
    echo "moto:     up $AWS_URL (pid $(cat "$LOCAL/moto.pid" 2>/dev/null || echo '?'))"
  else echo "moto:     DOWN ($AWS_URL)"; ok=1; fi
  if [ -x "$PY" ] && http_ok "$SCHEMA_URL"; then
    echo "schema:   up $SCHEMA_URL (pid $(cat "$LOCAL/schema.pid" 2>/dev/null || echo '?'))"
  else echo "schema:   DOWN ($SCHEMA_URL)"; ok=1; fi
  if [ -x "$PY" ]; then "$PY" "$SCRIPTS_DIR/local_aws.py" status || ok=1; else echo "aws:      n/a (no venv)"; ok=1; fi
  if [ -f "$LOCAL/salt" ]; then echo "salt:     .local/salt (cost $(cut -c5-6 "$LOCAL/salt"))"; else echo "salt:     MISSING"; ok=1; fi
  return $ok
}

cmd_env() {
  [ -f "$LOCAL/env" ] || die ".local/env does not exist: run scripts/local-stack.sh up"
  cat "$LOCAL/env"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  reset) [ -x "$PY" ] || die "no .venv: run scripts/local-stack.sh up"; "$PY" "$SCRIPTS_DIR/local_aws.py" reset ;;
  *) echo "usage: $0 up|down|status|env|reset" >&2; exit 2 ;;
esac
