#!/usr/bin/env bash
# Checks that `scripts/local-stack.sh up` reuses a server on its ports only when it works
# for this checkout, and otherwise names the process holding the port and what to do
# (exit 1) instead of failing later in a traceback. Three impostors, each on a free port:
#
#   1. a stale moto: answers moto's ping, fails every real call with HTTP 500 (what a moto
#      left over from a deleted checkout does);
#   2. something that is not HTTP at all on the moto port;
#   3. an HTTP server on the schema port that does not serve the PcReserve schema (the
#      moto port is this checkout's own, which must be up: run local-stack.sh up first).
#
# Run by scripts/test.sh; needs the local stack's .venv. Exit 0 when all three pass.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "test-local-stack: no .venv: run scripts/local-stack.sh up" >&2; exit 1; }
MOTO_PORT=${PCR_MOTO_PORT:-5055}

fail=0
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_impostor KIND PORT: KIND is stale-moto, not-http or wrong-schema; sets IMPOSTOR.
start_impostor() {
  "$PY" - "$1" "$2" >/dev/null 2>&1 <<'PY' &
import http.server, json, socket, sys
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "not-http":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(8)
    while True:
        c, _ = s.accept(); c.close()
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        if kind == "stale-moto" and self.path.startswith("/moto-api/proxy/passthrough"):
            body, code = json.dumps({"http_urls": [], "http_hosts": []}).encode(), 200
        elif kind == "wrong-schema":
            body, code = json.dumps({"data": {"schema": "{}"}}).encode(), 200
        else:
            body, code = b"internal error", 500
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_HEAD = answer
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
  IMPOSTOR=$!
  pids+=("$IMPOSTOR")
  local i
  for ((i = 0; i < 50; i++)); do
    timeout 1 bash -c ">/dev/tcp/127.0.0.1/$2" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "test-local-stack: the $1 impostor did not start on port $2" >&2
  exit 1
}

# expect NAME PID OUTPUT-PATTERN... : runs `up` (env already set by the caller) and checks
# exit code 1, the holder's pid and each pattern in the last line.
expect() {
  local name=$1 pid=$2; shift 2
  local out code last p
  set +e
  out=$(scripts/local-stack.sh up 2>&1)
  code=$?
  set -e
  last=$(printf '%s\n' "$out" | tail -n 1)
  if [ "$code" != 1 ]; then
    echo "FAIL $name: exit $code, want 1; output:" >&2; printf '%s\n' "$out" >&2; fail=1; return
  fi
  for p in "pid $pid " "kill $pid" "$@"; do
    if [[ "$last" != *"$p"* ]]; then
      echo "FAIL $name: the last line lacks \"$p\": $last" >&2; fail=1; return
    fi
  done
  if printf '%s\n' "$out" | grep -q Traceback; then
    echo "FAIL $name: a Python traceback was printed" >&2; fail=1; return
  fi
  echo "ok   $name: $last" >&2
}

port=$(free_port)
start_impostor stale-moto "$port"
PCR_MOTO_PORT=$port expect "stale moto on the moto port" "$IMPOSTOR" \
  "local-stack: error: port $port is held by" "answers like moto but does not work for this checkout" \
  "KMS ListKeys failed (HTTP 500)" "PCR_MOTO_PORT=<port> scripts/local-stack.sh up"

port=$(free_port)
start_impostor not-http "$port"
PCR_MOTO_PORT=$port expect "not HTTP on the moto port" "$IMPOSTOR" \
  "local-stack: error: port $port is held by" "which is not a moto server"

port=$(free_port)
start_impostor wrong-schema "$port"
PCR_MOTO_PORT=$MOTO_PORT PCR_SCHEMA_PORT=$port expect "wrong schema on the schema port" "$IMPOSTOR" \
  "local-stack: error: port $port is held by" "does not serve this checkout's schema" \
  "PCR_SCHEMA_PORT=<port> scripts/local-stack.sh up"

exit $fail
