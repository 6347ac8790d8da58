#!/usr/bin/env python3
"""Fault suite: runs the real poller binary against the local stack under faults and
checks that no reservation is lost and counts duplicates.

Each scenario creates its OWN MariaDB database, PostgreSQL databases, S3 bucket and
Kinesis stream (random `pcr_fault_*` names) and drops the databases afterwards; the
shared servers are never stopped. Faults:

  kill     SIGKILL at random moments of a multi-batch run, restart each time
  mysql    a TCP proxy in front of MariaDB cuts every connection mid-run
  postgres a TCP proxy in front of PostgreSQL (Sierra, Redshift) cuts them mid-run
  kinesis  an HTTP proxy in front of moto fails a share of PutRecords entries
           (ProvisionedThroughputExceededException, InternalFailure) without forwarding them
  two      two pollers started at once on the same cursor
  s3lost   moto commits half of the cursor and lease writes and answers 500 (the answer is
           lost; the SDK's retry fails its precondition), for a caller without s3:ListBucket

Usage: fault_suite.py BINARY [--quick] [--kills N] [--only NAME,...] [--table]
"""

import argparse
import asyncio
import http.client
import http.server
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter

LOCAL_STACK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "local-stack")
sys.path.insert(0, LOCAL_STACK)
import pcr_common as pc  # noqa: E402

SALT = "$2b$04$abcdefghijklmnopqrstuu"
# Every random choice of the scenarios (kill moments, which PutRecords entries fail and
# with which error) comes from generators seeded with SEED, printed at the start; give it
# back with PCR_FAULT_SEED to replay a failure. Resource names use their own unseeded
# generator so that a replay never collides with what the failed run left behind.
SEED = None
NAMES = random.SystemRandom()


def log(msg):
    print(f"fault-suite: {msg}", file=sys.stderr, flush=True)


def statements(sql):
    out = []
    for s in sql.split(";\n"):
        s = "\n".join(line for line in s.splitlines() if not line.strip().startswith("--")).strip()
        s = s.rstrip(";")
        if s:
            out.append(s)
    return out


def read_sql(name):
    with open(os.path.join(LOCAL_STACK, "sql", name)) as f:
        return f.read()


class Env:
    """One scenario's own databases, bucket and stream."""

    def __init__(self, label):
        suffix = "".join(NAMES.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
        self.name = f"pcr_fault_{label}_{suffix}"
        self.bucket = self.name.replace("_", "-")
        self.cursor_key = "poller/state.json"
        my = pc.mysql_connect(None)
        with my.cursor() as c:
            c.execute(f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4")
        my.close()
        my = pc.mysql_connect(self.name)
        with my.cursor() as c:
            for s in statements(read_sql("envisionware.sql")):
                c.execute(s)
        my.commit()
        my.close()
        pg = pc.pg_connect("postgres")
        pg.autocommit = True
        with pg.cursor() as c:
            for db in (f"{self.name}_sierra", f"{self.name}_rs"):
                c.execute(f"CREATE DATABASE {db} ENCODING 'UTF8' TEMPLATE template0")
        pg.close()
        sierra = pc.pg_connect(f"{self.name}_sierra")
        with sierra.cursor() as c:
            for s in statements(read_sql("sierra.sql")):
                c.execute(s)
            for i in range(7):
                c.execute(
                    "INSERT INTO sierra_view.phrase_entry (record_id, index_tag, index_entry) VALUES (%s, 'b', %s)",
                    (5000 + i, f"2333300000{i:04d}"),
                )
                c.execute(
                    "INSERT INTO sierra_view.patron_view (id, record_num, barcode, ptype_code, pcode3, home_library_code) VALUES (%s, 1000000, %s, 10, 1, 'sa')",
                    (5000 + i, f"2333300000{i:04d}"),
                )
        sierra.commit()
        sierra.close()
        rs = pc.pg_connect(f"{self.name}_rs")
        sql = (
            read_sql("redshift.sql")
            .replace("{{PATRON_INFO_TABLE}}", f"patron_info_{self.name}_rs")
            .replace("{{PC_RESERVE_TABLE}}", f"pc_reserve_{self.name}_rs")
        )
        with rs.cursor() as c:
            for s in statements(sql):
                c.execute(s)
        rs.commit()
        rs.close()
        self.s3 = pc.aws_client("s3")
        self.s3.create_bucket(Bucket=self.bucket)
        self.kinesis = pc.aws_client("kinesis")
        self.kinesis.create_stream(StreamName=self.name, ShardCount=1)
        for _ in range(200):
            d = self.kinesis.describe_stream_summary(StreamName=self.name)["StreamDescriptionSummary"]
            if d["StreamStatus"] == "ACTIVE":
                self.stream_arn = d["StreamARN"]
                break
            time.sleep(0.05)
        else:
            raise SystemExit("stream never became active")
        self.rows = 0

    def insert(self, n):
        """Appends n reservations (3 per second, so batch edges fall inside ties)."""
        my = pc.mysql_connect(self.name)
        with my.cursor() as c:
            values = []
            for k in range(self.rows + 1, self.rows + n + 1):
                second = (k - 1) // 3
                values.append(
                    (
                        k,
                        f"2333300000{k % 9:04d}",
                        45,
                        f"2024-06-{1 + second // 86400:02d} {second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}",
                        "Mid-Manhattan",
                        "Floor 2",
                    )
                )
            c.executemany(
                "INSERT INTO strad_bci (pcrKey, pcrUserID, pcrMinutesUsed, pcrDateTime, pcrBranch, pcrArea) VALUES (%s, %s, %s, %s, %s, %s)",
                values,
            )
        my.commit()
        my.close()
        self.rows += n

    def expected(self):
        """pcrKey text -> pseudonym (the record's key) for every row inserted so far."""
        cache = self.__dict__.setdefault("_pseudonyms", {})
        for k in range(len(cache) + 1, self.rows + 1):
            cache[str(k)] = pc.pseudonym(str(k), SALT)
        return dict(cache)

    def variables(self, mysql_port=3306, pg_port=5432, aws=None):
        my = pc._parse(os.environ.get("PCR_TEST_MYSQL_ADMIN_URL", pc.DEFAULT_MYSQL_ADMIN_URL))
        pg = pc._parse(os.environ.get("PCR_TEST_PG_ADMIN_URL", pc.DEFAULT_PG_ADMIN_URL))
        v = {
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": aws or pc.moto_endpoint(),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "ENVISIONWARE_DB_HOST": "127.0.0.1",
            "ENVISIONWARE_DB_PORT": str(mysql_port),
            "ENVISIONWARE_DB_NAME": self.name,
            "ENVISIONWARE_DB_USER": my["user"],
            "ENVISIONWARE_DB_PASSWORD": my["password"],
            "ENVISIONWARE_DB_SSLMODE": "disable",
            "KINESIS_STREAM_ARN": self.stream_arn,
            "KINESIS_BATCH_SIZE": "50",
            "KINESIS_MAX_RECORDS_PER_SECOND": "0",
            "ENVISIONWARE_BATCH_SIZE": "250",
            "BCRYPT_SALT": SALT,
            "S3_BUCKET": self.bucket,
            "S3_RESOURCE": self.cursor_key,
            "PC_RESERVE_SCHEMA_URL": os.environ.get(
                "PCR_TEST_SCHEMA_URL", "http://127.0.0.1:5056/api/v0.1/current-schemas/PcReserve"
            ),
            "PCR_DATE_TIME": "2023-01-01 00:00:00",
            "PCR_KEY": "0",
            "RETRY_ATTEMPTS": "3",
            "RETRY_BASE_DELAY_MS": "50",
            "DB_CONNECT_TIMEOUT_SECONDS": "3",
            "DB_STATEMENT_TIMEOUT_SECONDS": "10",
            "LEASE_TTL_SECONDS": "2",
            "LOG_LEVEL": "warning",
            "PSEUDONYM_THREADS": "1",
        }
        for prefix, port in (("SIERRA", pg_port), ("REDSHIFT", pg_port)):
            v.update(
                {
                    f"{prefix}_DB_HOST": "127.0.0.1",
                    f"{prefix}_DB_PORT": str(port),
                    f"{prefix}_DB_NAME": f"{self.name}_{'sierra' if prefix == 'SIERRA' else 'rs'}",
                    f"{prefix}_DB_USER": pg["user"],
                    f"{prefix}_DB_PASSWORD": pg["password"],
                    f"{prefix}_DB_SSLMODE": "disable",
                }
            )
        return v

    def stream_keys(self):
        """Every partition key on the stream (the record's pseudonymous key), in order."""
        out = []
        shards = self.kinesis.list_shards(StreamARN=self.stream_arn)["Shards"]
        for shard in shards:
            it = self.kinesis.get_shard_iterator(
                StreamARN=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while True:
                got = self.kinesis.get_records(StreamARN=self.stream_arn, ShardIterator=it, Limit=10000)
                out.extend(r["PartitionKey"] for r in got["Records"])
                if not got["Records"] or not got.get("NextShardIterator"):
                    break
                it = got["NextShardIterator"]
        return out

    def cursor(self):
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.cursor_key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def cleanup(self):
        try:
            my = pc.mysql_connect(None)
            with my.cursor() as c:
                c.execute(f"DROP DATABASE IF EXISTS {self.name}")
            my.close()
            pg = pc.pg_connect("postgres")
            pg.autocommit = True
            with pg.cursor() as c:
                for db in (f"{self.name}_sierra", f"{self.name}_rs"):
                    c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            pg.close()
            self.kinesis.delete_stream(StreamARN=self.stream_arn)
        except Exception as e:  # best effort: the stack is disposable
            log(f"cleanup of {self.name}: {e}")


class Poller:
    def __init__(self, binary, variables, extra=None):
        env = {"PATH": os.environ.get("PATH", "")}
        env.update(variables)
        env.update(extra or {})
        self.proc = subprocess.Popen(
            [binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def wait(self, timeout=None):
        _, err = self.proc.communicate(timeout=timeout)
        self.stderr = err
        return self.proc.returncode

    def last_line(self):
        lines = [line for line in (self.stderr or "").splitlines() if line.strip()]
        return lines[-1] if lines else ""


def message(line):
    """The message of the text log line that ends a failed run,
    `<time> ERROR <stage>: <cause> stage=<stage> exit_code=<N>`: `<stage>: <cause>`."""
    parts = line.split(None, 2)
    text = parts[2] if len(parts) == 3 else line
    return re.sub(r" stage=.* exit_code=\d+$", "", text)


def check_complete(env, label):
    """All expected keys present; returns (lost, duplicates)."""
    expected = set(env.expected().values())
    keys = env.stream_keys()
    counts = Counter(keys)
    lost = len(expected - set(counts))
    unexpected = len(set(counts) - expected)
    dups = len(keys) - len(counts)
    if lost or unexpected:
        raise SystemExit(f"{label}: LOST {lost} reservations, {unexpected} unexpected keys")
    return lost, dups


def check_cursor_intact(env, label, pseudonyms):
    """Every reservation up to the cursor is on the stream (the cursor never passed an unsent one)."""
    cur = env.cursor()
    if cur is None:
        return 0
    upto = int(cur["pcr_key"])
    on_stream = set(env.stream_keys())
    missing = [k for k in range(1, upto + 1) if pseudonyms[str(k)] not in on_stream]
    if missing:
        raise SystemExit(f"{label}: cursor at {upto} but {len(missing)} reservations before it are not on the stream")
    return upto


def run_to_completion(binary, env, variables, label, attempts=40):
    """Runs until exit 0, waiting out a lease a killed run left behind."""
    for _ in range(attempts):
        p = Poller(binary, variables)
        rc = p.wait(timeout=300)
        if rc == 0:
            return
        if rc == 3:
            time.sleep(0.5)
            continue
        raise SystemExit(f"{label}: run failed with exit {rc}: {p.last_line()}")
    raise SystemExit(f"{label}: the lease never became free")


# ---------------------------------------------------------------- scenarios


def moto_faults(rule):
    """Sets a fault rule of moto_server.py (its docstring, 5)."""
    req = urllib.request.Request(
        f"{pc.moto_endpoint().rstrip('/')}/_pcr/faults",
        data=json.dumps(rule).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def moto_requests(scope):
    """moto_server.py's log of the calls to the stream or bucket named `scope`."""
    url = f"{pc.moto_endpoint().rstrip('/')}/_pcr/requests?scope={urllib.parse.quote(scope)}"
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def put_records_in_flight(env, at):
    """The PutRecords calls to env's stream that had started and not been answered at `at`."""
    return [
        r
        for r in moto_requests(env.name)
        if r["operation"] == "PutRecords" and r["start"] <= at and (r["end"] is None or r["end"] > at)
    ]


def wait_for_put_records_in_flight(env, proc, limit=30.0):
    """Waits until a PutRecords call of this run is in flight (True), or the run ends."""
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        now = time.time()
        if any(r["end"] is None for r in put_records_in_flight(env, now)):
            return True
        time.sleep(0.01)
    return False


def scenario_kill(binary, kills, rows):
    rng = random.Random(f"{SEED}-kill")
    env = Env("kill")
    try:
        env.insert(rows)
        variables = env.variables()
        variables["KINESIS_MAX_RECORDS_PER_SECOND"] = "400"
        # Each PutRecords is answered 150 ms late, as a loaded stream answers: a request is in
        # flight most of the time, so random kills land mid-request too. The first kill
        # waits for one on purpose; every kill's moment is checked against moto's request
        # log afterwards, and at least one must have landed while a request was in flight
        # (otherwise the duplicate bound below would not be exercised).
        moto_faults({"service": "kinesis", "scope": env.name, "operation": "PutRecords", "delay_ms": 150})
        pseudonyms = env.expected()
        done, refused, per_crash, prev_dups = 0, 0, [], None
        kill_times = []
        start = time.time()
        while done < kills:
            p = Poller(binary, variables)
            try:
                if done == 0 and wait_for_put_records_in_flight(env, p.proc):
                    raise subprocess.TimeoutExpired(binary, 0)
                rc = p.wait(timeout=rng.uniform(0.2, 2.0))
            except subprocess.TimeoutExpired:
                kill_times.append(time.time())
                p.proc.send_signal(signal.SIGKILL)
                p.wait(timeout=30)
                done += 1
                check_cursor_intact(env, "kill", pseudonyms)
                keys = env.stream_keys()
                dups = len(keys) - len(set(keys))
                if prev_dups is not None:
                    per_crash.append(dups - prev_dups)
                prev_dups = dups
                continue
            if rc == 3:
                refused += 1  # the killed run's lease has not lapsed yet
                time.sleep(0.3)
            elif rc == 0:
                env.insert(rows // 2)  # drained before enough kills: more work
                pseudonyms = env.expected()
            else:
                raise SystemExit(f"kill: unexpected exit {rc}: {p.last_line()}")
        run_to_completion(binary, env, variables, "kill")
        in_flight = sum(1 for t in kill_times if put_records_in_flight(env, t))
        if in_flight == 0:
            raise SystemExit(f"kill: none of the {len(kill_times)} SIGKILLs landed while a PutRecords request was in flight")
        lost, dups = check_complete(env, "kill")
        per_crash.append(dups - (prev_dups or 0))
        # docs/delivery.md ("Losing nothing, duplicating little"): a crash re-sends at most one
        # request's worth of records, KINESIS_BATCH_SIZE (50 here).
        batch_size = int(variables["KINESIS_BATCH_SIZE"])
        if batch_size != 50:
            raise SystemExit(f"kill: KINESIS_BATCH_SIZE is {batch_size}, docs/delivery.md's table assumes 50")
        over = [n for n in per_crash if n > 50]
        if over:
            raise SystemExit(f"kill: a crash caused {max(over)} duplicates, more than KINESIS_BATCH_SIZE (50); per crash {per_crash}")
        log(
            f"kill: {kills} SIGKILLs ({in_flight} while a PutRecords request was in flight), {env.rows} reservations, lost {lost}, duplicates {dups} "
            f"(max per crash {max(per_crash)}), {refused} restarts refused by the lease, {time.time() - start:.0f}s"
        )
        return {
            "cmd": "kill",
            "fault": f"SIGKILL at random moments, {kills} times, restart each time",
            "lost": lost,
            "max_dup": max(per_crash),
            "total_dup": dups,
            "detail": f"{env.rows} reservations, all on the stream; {in_flight} of the {kills} SIGKILLs landed while a PutRecords request was in flight; KINESIS_BATCH_SIZE=50 bounds the duplicates per crash",
        }
    finally:
        try:
            moto_faults({"service": "kinesis", "scope": env.name})
        except Exception:
            pass
        env.cleanup()


class TcpProxy:
    """A TCP proxy on loopback that can cut every connection and refuse new ones."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.refusing = False
        self.conns = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        if self.refusing:
            writer.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.conns.update([writer, uw])

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        self.conns.discard(writer)
        self.conns.discard(uw)

    def cut(self):
        def do():
            self.refusing = True
            for w in list(self.conns):
                w.transport.abort()

        self.loop.call_soon_threadsafe(do)

    def restore(self):
        self.loop.call_soon_threadsafe(lambda: setattr(self, "refusing", False))


def scenario_db_cut(binary, which, rows):
    env = Env(which)
    try:
        env.insert(rows)
        pseudonyms = env.expected()
        proxy = TcpProxy(3306 if which == "mysql" else 5432)
        ports = {"mysql_port": proxy.port} if which == "mysql" else {"pg_port": proxy.port}
        variables = env.variables(**ports)
        variables["KINESIS_MAX_RECORDS_PER_SECOND"] = "400"
        variables["ENVISIONWARE_BATCH_SIZE"] = "100"
        p = Poller(binary, variables)
        for _ in range(400):
            if env.cursor() is not None:
                break
            time.sleep(0.05)
        proxy.cut()
        rc = p.wait(timeout=120)
        stage = "Envisionware" if which == "mysql" else "Sierra"
        line = p.last_line()
        if rc != 1 or stage not in line and "Redshift" not in line:
            raise SystemExit(f"{which}: expected a clean failure (exit 1) naming {stage}, got {rc}: {line}")
        upto = check_cursor_intact(env, which, pseudonyms)
        if upto >= env.rows:
            raise SystemExit(f"{which}: the cut came too late (the run had finished)")
        proxy.restore()
        run_to_completion(binary, env, variables, which)
        lost, dups = check_complete(env, which)
        log(f"{which}: cut at cursor {upto}/{env.rows}; exit {rc}: {message(line)}; next run: lost {lost}, duplicates {dups}")
        db = "MariaDB (Envisionware)" if which == "mysql" else "PostgreSQL (Sierra, Redshift)"
        return {
            "cmd": which,
            "fault": f"{db} connections cut mid-run by a TCP proxy",
            "lost": lost,
            "max_dup": dups,
            "total_dup": dups,
            "detail": f"exit 1 (`{message(line).split(':')[0]}: error communicating with database`), cursor intact, next run complete",
        }
    finally:
        env.cleanup()


class KinesisFaultProxy(http.server.ThreadingHTTPServer):
    """Forwards to moto; fails a share of PutRecords entries without forwarding them."""

    daemon_threads = True

    def __init__(self, upstream, share):
        self.upstream = upstream
        self.share = share
        self.failed = 0
        self.lock = threading.Lock()
        # The proxy's own seeded generator, drawn under the lock: which entries fail
        # follows from the seed and the order of the requests.
        self.rng = random.Random(f"{SEED}-kinesis")
        super().__init__(("127.0.0.1", 0), KinesisFaultHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class KinesisFaultHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _forward(self, body):
        host, port = self.server.upstream
        conn = http.client.HTTPConnection(host, port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")}
        headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, resp.getheaders(), data

    def _reply(self, status, headers, data):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        body = self._body()
        if self.headers.get("X-Amz-Target", "").endswith(".PutRecords"):
            req = json.loads(body)
            records = req["Records"]
            with self.server.lock:
                fail = [self.server.rng.random() < self.server.share for _ in records]
                codes = [
                    self.server.rng.choice(["ProvisionedThroughputExceededException", "InternalFailure"])
                    for _ in records
                ]
            kept = [r for r, f in zip(records, fail) if not f]
            results = []
            if kept:
                req["Records"] = kept
                status, headers, data = self._forward(json.dumps(req).encode())
                if status != 200:
                    return self._reply(status, headers, data)
                results = json.loads(data)["Records"]
            else:
                headers = [("Content-Type", "application/x-amz-json-1.1")]
            merged, it = [], iter(results)
            for f, code in zip(fail, codes):
                merged.append(
                    {
                        "ErrorCode": code,
                        "ErrorMessage": "injected by the fault proxy",
                    }
                    if f
                    else next(it)
                )
            with self.server.lock:
                self.server.failed += sum(fail)
            out = json.dumps({"FailedRecordCount": sum(fail), "Records": merged}).encode()
            return self._reply(200, [h for h in headers if h[0].lower() == "content-type"], out)
        self._reply(*self._forward(body))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def scenario_kinesis(binary, rows, share=0.3):
    env = Env("kinesis")
    try:
        env.insert(rows)
        upstream = pc.moto_endpoint().split("://", 1)[1].rstrip("/").split(":")
        proxy = KinesisFaultProxy((upstream[0], int(upstream[1])), share)
        variables = env.variables(aws=f"http://127.0.0.1:{proxy.server_address[1]}")
        variables["RETRY_ATTEMPTS"] = "6"
        run_to_completion(binary, env, variables, "kinesis")
        lost, dups = check_complete(env, "kinesis")
        proxy.shutdown()
        if proxy.failed == 0:
            raise SystemExit("kinesis: the proxy failed no record")
        if dups:
            raise SystemExit(f"kinesis: {dups} duplicates although failed records never reached the stream")
        log(f"kinesis: {proxy.failed} entries failed by the proxy ({share:.0%} share), lost {lost}, duplicates {dups}")
        return {
            "cmd": "kinesis",
            "fault": f"Kinesis fails {share:.0%} of PutRecords entries (ProvisionedThroughputExceededException, InternalFailure)",
            "lost": lost,
            "max_dup": dups,
            "total_dup": dups,
            "detail": f"{proxy.failed} failed entries resent, each arrived exactly once",
        }
    finally:
        env.cleanup()


def scenario_two(binary, rows):
    env = Env("two")
    try:
        env.insert(rows)
        variables = env.variables()
        variables["KINESIS_MAX_RECORDS_PER_SECOND"] = "400"
        a, b = Poller(binary, variables), Poller(binary, variables)
        codes = sorted([a.wait(timeout=300), b.wait(timeout=300)])
        loser = a if a.proc.returncode == 3 else b
        if codes != [0, 3]:
            raise SystemExit(f"two: expected exits [0, 3], got {codes}: {a.last_line()} | {b.last_line()}")
        lost, dups = check_complete(env, "two")
        if dups:
            raise SystemExit(f"two: {dups} duplicates: both pollers sent")
        log(f"two: exits {codes}; loser said: {message(loser.last_line())}; lost {lost}, duplicates {dups}")
        return {
            "cmd": "two",
            "fault": "two pollers started at once",
            "lost": lost,
            "max_dup": dups,
            "total_dup": dups,
            "detail": "one sends (exit 0), the other exits 3 before sending anything",
        }
    finally:
        env.cleanup()


def lose_answers(bucket, rate, seed):
    """Turns moto_server.py's lost answers on (rate > 0) or off for `bucket`."""
    req = urllib.request.Request(
        f"{pc.moto_endpoint().rstrip('/')}/_pcr/lost-responses",
        data=json.dumps({"bucket": bucket, "rate": rate, "seed": seed}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def lost_count(bucket):
    rules = json.loads(urllib.request.urlopen(f"{pc.moto_endpoint().rstrip('/')}/_pcr/lost-responses", timeout=10).read())
    return next((r["lost"] for r in rules if r["bucket"] == bucket), 0)


def scenario_s3lost(binary, rows, rate=0.5):
    env = Env("s3lost")
    seed = random.SystemRandom().randrange(2**32)
    try:
        env.insert(rows)
        # Real deployments start from an existing cursor (without s3:ListBucket a missing
        # one reads as 403): the original's format, just before the first reservation.
        env.s3.put_object(
            Bucket=env.bucket,
            Key=env.cursor_key,
            Body=json.dumps({"pcr_key": "0", "pcr_date_time": "2024-06-01 00:00:00"}).encode(),
        )
        lose_answers(env.bucket, rate, seed)
        log(f"s3lost: {rate:.0%} of the answers to writes in {env.bucket} lost, seed {seed}")
        variables = env.variables()
        variables["AWS_ACCESS_KEY_ID"] = "AKIAPCRWITHOUTLIST01"
        variables["KINESIS_MAX_RECORDS_PER_SECOND"] = "1000"
        run_to_completion(binary, env, variables, f"s3lost (seed {seed})")
        lost_answers = lost_count(env.bucket)
        lose_answers(env.bucket, 0, None)
        lost, dups = check_complete(env, f"s3lost (seed {seed})")
        cursor = env.cursor()
        if cursor is None or int(cursor["pcr_key"]) != rows:
            raise SystemExit(f"s3lost (seed {seed}): cursor {cursor}, expected key {rows}")
        if lost_answers == 0:
            raise SystemExit(f"s3lost (seed {seed}): no answer was lost")
        if dups:
            raise SystemExit(f"s3lost (seed {seed}): {dups} duplicates")
        log(f"s3lost: {lost_answers} answers lost, exit 0, lost {lost}, duplicates {dups}")
        return {
            "cmd": "s3lost",
            "fault": f"S3 commits {rate:.0%} of the cursor and lease writes but the answer is lost (500; the retry gets 412/404), caller without s3:ListBucket",
            "lost": lost,
            "max_dup": dups,
            "total_dup": dups,
            "detail": f"{lost_answers} lost answers recognised as the run's own writes; exit 0, cursor at the last reservation",
        }
    finally:
        try:
            lose_answers(env.bucket, 0, None)
        except Exception:
            pass
        env.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--quick", action="store_true", help="CI-sized: fewer kills and rows")
    ap.add_argument("--kills", type=int, help="SIGKILLs (default 20, --quick 5)")
    ap.add_argument("--only", help="comma-separated: kill,mysql,postgres,kinesis,two,s3lost")
    ap.add_argument("--table", action="store_true", help="print a Markdown table of the outcomes")
    args = ap.parse_args()
    kills = args.kills or (5 if args.quick else 20)
    global SEED
    given = os.environ.get("PCR_FAULT_SEED", "").strip()
    if given and not given.isdigit():
        raise SystemExit(f"PCR_FAULT_SEED must be a whole number, not {given!r}")
    SEED = int(given) if given else random.SystemRandom().randrange(2**32)
    random.seed(SEED)
    replay = " ".join(a for a in sys.argv[2:])
    log(f"seed {SEED}; replay with: PCR_FAULT_SEED={SEED} scripts/fault-suite.sh {replay}".rstrip())
    rows = 1500 if args.quick else 4000
    only = set((args.only or "kill,mysql,postgres,kinesis,two,s3lost").split(","))
    started = time.time()
    results = []
    if "kill" in only:
        results.append(scenario_kill(args.binary, kills, rows))
    if "mysql" in only:
        results.append(scenario_db_cut(args.binary, "mysql", rows))
    if "postgres" in only:
        results.append(scenario_db_cut(args.binary, "postgres", rows))
    if "kinesis" in only:
        results.append(scenario_kinesis(args.binary, 1000 if args.quick else 3000))
    if "two" in only:
        results.append(scenario_two(args.binary, 1000 if args.quick else 3000))
    if "s3lost" in only:
        results.append(scenario_s3lost(args.binary, 500 if args.quick else 2000))
    if args.table:
        print("| fault | command | records lost | duplicates | outcome |")
        print("| --- | --- | --- | --- | --- |")
        for r in results:
            dup = str(r["total_dup"])
            if r["cmd"] == "kill":
                dup = f"{r['total_dup']} in all, at most {r['max_dup']} per crash"
            cmd = f"`scripts/fault-suite.sh --only {r['cmd']}`"
            print(f"| {r['fault']} | {cmd} | {r['lost']} | {dup} | {r['detail']} |")
    log(f"all {len(results)} scenarios passed in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
