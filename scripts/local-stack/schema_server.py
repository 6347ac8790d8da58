#!/usr/bin/env python3
"""Serve the PcReserve schema response on loopback, like the NYPL Platform API.

GET /api/v0.1/current-schemas/PcReserve -> tests/fixtures/PcReserve-schema-response.json
(200, application/json); anything else -> 404. Standard library only.

Usage: schema_server.py [--host 127.0.0.1] [--port 5056]
"""

import argparse
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/api/v0.1/current-schemas/PcReserve"
FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "fixtures", "PcReserve-schema-response.json")


class Handler(BaseHTTPRequestHandler):
    body = b""

    def _send(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path.split("?", 1)[0] == PATH:
            self._send(200, self.body, "application/json")
        else:
            self._send(404, b'{"statusCode": 404, "error": "not found"}', "application/json")

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        sys.stderr.write("schema-server: %s %s\n" % (self.address_string(), fmt % args))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("PCR_SCHEMA_PORT", "5056")))
    a = ap.parse_args()
    with open(FIXTURE, "rb") as f:
        Handler.body = f.read()
    srv = ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    sys.stderr.write(f"schema-server: listening on http://{a.host}:{a.port}{PATH}\n")
    sys.stderr.flush()
    srv.serve_forever()


if __name__ == "__main__":
    main()
