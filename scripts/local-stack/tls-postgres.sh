#!/usr/bin/env bash
# A throwaway PostgreSQL server with TLS, for the TLS tests: its own CA and server
# certificate (SAN DNS:localhost, IP:127.0.0.1), a second untrusted CA, its own data
# directory and port. It never touches the local stack's PostgreSQL on 5432.
#
#   scripts/local-stack/tls-postgres.sh up     create (first time) and start; idempotent; prints `env`
#   scripts/local-stack/tls-postgres.sh env    the variables the tests read (PCR_TEST_TLS_PG_*)
#   scripts/local-stack/tls-postgres.sh down   stop it and delete its directory
#
# It listens on 127.0.0.1 and 127.0.0.2 (any 127/8 address is loopback on Linux), so a
# client can reach it under an address the certificate does not name. TLS is offered but
# not required (pg_hba allows both), so sslmode=disable can be tested too.
# PCR_TLS_PG_DIR (default /tmp/pcr-tls-postgres) and PCR_TLS_PG_PORT (default 55433)
# move it. Needs the PostgreSQL server binaries (scripts/local-stack.sh up installs
# them) and the openssl CLI.
set -euo pipefail

DIR="${PCR_TLS_PG_DIR:-/tmp/pcr-tls-postgres}"
PORT="${PCR_TLS_PG_PORT:-55433}"

die() { echo "tls-postgres.sh: $*" >&2; exit 1; }

pg_bin() {
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || die "PostgreSQL server binaries not found (run scripts/local-stack.sh up)"
  echo "$bin"
}

# Runs a command as the user owning the data directory (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

env_lines() {
  cat <<EOF
export PCR_TEST_TLS_PG_PORT=$PORT
export PCR_TEST_TLS_PG_CA=$DIR/certs/ca.crt
export PCR_TEST_TLS_PG_OTHER_CA=$DIR/certs/other-ca.crt
EOF
}

make_certs() {
  local c="$DIR/certs"
  mkdir -p "$c"
  command -v openssl >/dev/null || die "the openssl CLI is not installed (apt-get install openssl)"
  # The CA that signs the server, and an unrelated one the server does not chain to.
  for ca in ca other-ca; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=pc-reserve-poller test $ca" -keyout "$c/$ca.key" -out "$c/$ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$c/server.key" -out "$c/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$c/server.ext"
  openssl x509 -req -in "$c/server.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial -days 3650 \
    -extfile "$c/server.ext" -out "$c/server.crt" 2>/dev/null
  chmod 0644 "$c"/*.crt
}

up() {
  local bin
  bin="$(pg_bin)"
  mkdir -p "$DIR"
  exec 9>"$DIR.lock"
  flock 9
  if [ -f "$DIR/data/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    env_lines
    return
  fi
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    rm -rf "$DIR/data" "$DIR/certs"
    make_certs
    mkdir -p "$DIR/data"
    chmod 0755 "$DIR" "$DIR/certs"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR/data"; fi
    as_pg "$bin/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
    cp "$DIR/certs/server.crt" "$DIR/certs/server.key" "$DIR/data/"
    chmod 0600 "$DIR/data/server.key"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR/data/server.crt" "$DIR/data/server.key"; fi
    cat >>"$DIR/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1,127.0.0.2'
unix_socket_directories = '$DIR/data'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
fsync = off
shared_buffers = 16MB
max_connections = 40
EOF
    cat >"$DIR/data/pg_hba.conf" <<EOF
local all all trust
hostssl all all 127.0.0.0/8 trust
hostnossl all all 127.0.0.0/8 trust
EOF
  fi
  # 9>&-: the server must not inherit (and hold) the lock.
  as_pg "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/data/server.log" -w -t 30 start >/dev/null 9>&- ||
    { tail -n 20 "$DIR/data/server.log" >&2; die "the server did not start"; }
  env_lines
}

down() {
  local bin
  bin="$(pg_bin)"
  if [ -f "$DIR/data/PG_VERSION" ]; then
    as_pg "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR" "$DIR.lock"
}

case "${1:-up}" in
  up) up ;;
  env) env_lines ;;
  down) down ;;
  *) die "usage: $0 up|env|down" ;;
esac
