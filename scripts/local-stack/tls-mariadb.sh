#!/usr/bin/env bash
# A throwaway MariaDB server with TLS, for the Envisionware TLS tests: its own CA and
# server certificate (SAN DNS:localhost, IP:127.0.0.1), a second untrusted CA, its own data
# directory and port. It never touches the local stack's MariaDB on 3306.
#
#   scripts/local-stack/tls-mariadb.sh up     create (first time) and start; idempotent; prints `env`
#   scripts/local-stack/tls-mariadb.sh env    the variables the tests read (PCR_TEST_TLS_MY_*)
#   scripts/local-stack/tls-mariadb.sh down   stop it and delete its directory
#
# It listens on 127.0.0.1 and 127.0.0.2 (any 127/8 address is loopback on Linux), so a
# client can reach it under an address the certificate does not name. TLS is offered but
# not required, so `disable` and `prefer` can be tested too. The user `pcr` (password
# `pcr-tls`) may do anything. PCR_TLS_MY_DIR (default /tmp/pcr-tls-mariadb) and
# PCR_TLS_MY_PORT (default 23306, below the ephemeral port range 32768-60999 that the tests' own client sockets and loopback servers draw from) move it. Needs the MariaDB server (scripts/local-stack.sh
# up installs it) and the openssl CLI.
set -euo pipefail

DIR="${PCR_TLS_MY_DIR:-/tmp/pcr-tls-mariadb}"
PORT="${PCR_TLS_MY_PORT:-23306}"
SOCK="$DIR/mysqld.sock"

die() { echo "tls-mariadb.sh: $*" >&2; exit 1; }

server_bin() {
  local bin
  for bin in mariadbd mysqld /usr/sbin/mariadbd /usr/sbin/mysqld; do
    if command -v "$bin" >/dev/null 2>&1; then command -v "$bin"; return; fi
  done
  die "the MariaDB server is not installed (run scripts/local-stack.sh up)"
}

env_lines() {
  cat <<EOF
export PCR_TEST_TLS_MY_PORT=$PORT
export PCR_TEST_TLS_MY_CA=$DIR/certs/ca.crt
export PCR_TEST_TLS_MY_OTHER_CA=$DIR/certs/other-ca.crt
EOF
}

make_certs() {
  local c="$DIR/certs"
  mkdir -p "$c"
  command -v openssl >/dev/null || die "the openssl CLI is not installed (apt-get install openssl)"
  # The CA that signs the server, and an unrelated one the server does not chain to.
  for ca in ca other-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=pc-reserve-poller test MariaDB $ca" -keyout "$c/$ca.key" -out "$c/$ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$c/server.key" -out "$c/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$c/server.ext"
  openssl x509 -req -in "$c/server.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 3650 \
    -extfile "$c/server.ext" -out "$c/server.crt" 2>/dev/null
  chmod 0644 "$c"/*.crt "$c/server.key"
}

running() {
  mariadb-admin --socket="$SOCK" -uroot ping >/dev/null 2>&1
}

up() {
  local bin user
  bin="$(server_bin)"
  mkdir -p "$DIR"
  exec 9>"$DIR.lock"
  flock 9
  if running; then
    env_lines
    return
  fi
  user="$(id -un)"
  if [ "$(id -u)" = 0 ]; then user=mysql; fi
  if [ ! -d "$DIR/data/mysql" ]; then
    rm -rf "$DIR/data" "$DIR/certs"
    make_certs
    mkdir -p "$DIR/data"
    chmod 0755 "$DIR" "$DIR/certs"
    if [ "$(id -u)" = 0 ]; then chown mysql: "$DIR" "$DIR/data"; fi
    cat >"$DIR/my.cnf" <<EOF
[mariadbd]
datadir = $DIR/data
socket = $SOCK
pid-file = $DIR/mysqld.pid
port = $PORT
bind-address = 127.0.0.1,127.0.0.2
skip-name-resolve
ssl-ca = $DIR/certs/ca.crt
ssl-cert = $DIR/certs/server.crt
ssl-key = $DIR/certs/server.key
innodb_buffer_pool_size = 16M
innodb_log_file_size = 8M
max_connections = 40
EOF
    mariadb-install-db --defaults-file="$DIR/my.cnf" --user="$user" --auth-root-authentication-method=socket \
      --skip-test-db >"$DIR/install.log" 2>&1 || { tail -n 20 "$DIR/install.log" >&2; die "mariadb-install-db failed"; }
  fi
  # setsid, no inherited descriptors (9>&-: the lock; the caller's stdout and stderr): the
  # server must not hold what a test runner waits on.
  setsid "$bin" --defaults-file="$DIR/my.cnf" --user="$user" </dev/null >"$DIR/server.log" 2>&1 9>&- &
  for _ in $(seq 1 150); do
    running && break
    sleep 0.2
  done
  running || { tail -n 20 "$DIR/server.log" >&2; die "the server did not start"; }
  mariadb --socket="$SOCK" -uroot <<'EOF'
CREATE USER IF NOT EXISTS 'pcr'@'%' IDENTIFIED BY 'pcr-tls';
GRANT ALL PRIVILEGES ON *.* TO 'pcr'@'%';
EOF
  env_lines
}

down() {
  if [ -f "$DIR/mysqld.pid" ]; then
    local pid
    pid="$(cat "$DIR/mysqld.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -rf "$DIR" "$DIR.lock"
}

case "${1:-up}" in
  up) up ;;
  env) env_lines ;;
  down) down ;;
  *) die "usage: $0 up|env|down" ;;
esac
