#!/usr/bin/env python3
"""AWS side of the local stack, against moto (called by scripts/local-stack.sh).

Subcommands:
  ping                 exit 0 when a moto server answers on the endpoint
  probe                exit 0 when it also serves real KMS, Kinesis and S3 calls (a moto
                       left over from another checkout may answer the ping and fail them);
                       otherwise print why, in one line
  setup [--fresh]      KMS key + alias, Kinesis stream, S3 bucket, .local/salt and
                       config/local.yaml (rewritten only when it does not decrypt to the
                       expected values, or with --fresh, i.e. after moto was restarted)
  status               one line: key, stream, bucket, config state
  scratch              create or empty the stream and bucket `pcr-scratch` (1 shard), which
                       the examples of docs/ that send or move a cursor use
  reset                empty the stream (delete and recreate it, same ARN) and delete every
                       object in the state bucket (cursor, lease); the config stays valid
"""

import argparse
import base64
import datetime
import json
import os
import re
import sys
import tempfile
import time
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pcr_common as c  # noqa: E402

CONFIG_FILE = c.REPO_ROOT / "config" / "local.yaml"
# The stream and bucket of the examples (docs/operating.md, ...) that send or move a cursor.
SCRATCH = "pcr-scratch"
SALT_RE = re.compile(r"^\$2[ab]\$(\d\d)\$[./A-Za-z0-9]{21}[.Oeu]$")


def ping():
    # A small moto-only endpoint that needs no files: the dashboard page needs moto's
    # installed static files, and data.json dumps every backend's state (seconds once many
    # test runs have created streams and buckets).
    url = c.moto_endpoint().rstrip("/") + "/moto-api/proxy/passthrough"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status in (200, 201) and "http_urls" in json.loads(r.read())
    except Exception:
        return False


def probe():
    """None when moto serves a real call of each service this checkout uses, else why not."""
    import boto3
    from botocore.config import Config

    cfg = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}, s3={"addressing_style": "path"})
    calls = [
        ("kms", "ListKeys", lambda k: k.list_keys(Limit=1)),
        ("kinesis", "ListStreams", lambda k: k.list_streams(Limit=1)),
        ("s3", "ListBuckets", lambda k: k.list_buckets()),
    ]
    for service, action, call in calls:
        client = boto3.client(
            service,
            endpoint_url=c.moto_endpoint(),
            region_name=c.REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=cfg,
        )
        try:
            call(client)
        except Exception as e:  # any failure means this server is no use to this checkout
            status = getattr(e, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            what = f"HTTP {status}" if status else type(e).__name__
            return f"{service.upper() if service != 'kinesis' else 'Kinesis'} {action} failed ({what})"
    return None


def ensure_key(kms, fresh):
    try:
        meta = kms.describe_key(KeyId=c.KMS_ALIAS)["KeyMetadata"]
        if meta.get("KeyState") == "Enabled" and not fresh:
            return meta["KeyId"], False
    except kms.exceptions.NotFoundException:
        meta = None
    key_id = kms.create_key(Description="pc-reserve-poller local config key")["KeyMetadata"]["KeyId"]
    if meta is not None:
        kms.update_alias(AliasName=c.KMS_ALIAS, TargetKeyId=key_id)
    else:
        kms.create_alias(AliasName=c.KMS_ALIAS, TargetKeyId=key_id)
    c.log(f"  kms: created key {key_id} ({c.KMS_ALIAS})")
    return key_id, True


def ensure_stream(kin, name=None, shards=2):
    name = name or c.STREAM_NAME
    try:
        s = kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    except kin.exceptions.ResourceNotFoundException:
        kin.create_stream(StreamName=name, ShardCount=shards)
        c.log(f"  kinesis: created stream {name} ({shards} shards)")
        s = None
    deadline = time.time() + 60
    while True:
        s = kin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if s["StreamStatus"] == "ACTIVE":
            return s["StreamARN"]
        if time.time() > deadline:
            c.die(f"kinesis stream {name} not ACTIVE after 60 s (status {s['StreamStatus']})")
        time.sleep(0.5)


def ensure_bucket(s3, name=None):
    name = name or c.BUCKET
    try:
        s3.head_bucket(Bucket=name)
    except Exception:
        s3.create_bucket(Bucket=name)
        c.log(f"  s3: created bucket {name}")


def ensure_salt():
    import bcrypt

    cost_s = os.environ.get("PCR_DEMO_BCRYPT_COST", "4")
    if not re.fullmatch(r"\d{1,2}", cost_s) or not 4 <= int(cost_s) <= 31:
        c.die(f"PCR_DEMO_BCRYPT_COST must be 4..31, got {cost_s!r}")
    cost = int(cost_s)
    if c.SALT_FILE.exists():
        salt = c.SALT_FILE.read_text().strip()
        m = SALT_RE.match(salt)
        if m and int(m.group(1)) == cost:
            return salt
    salt = bcrypt.gensalt(rounds=cost, prefix=b"2b").decode("ascii")
    assert SALT_RE.match(salt), "gensalt produced a non-canonical salt"
    c.LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    tmp = c.SALT_FILE.with_suffix(".tmp")
    tmp.write_text(salt + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(c.SALT_FILE)
    c.log(f"  salt: new bcrypt salt, cost {cost} (.local/salt)")
    return salt


def expected_values(stream_arn, salt):
    schema_port = os.environ.get("PCR_SCHEMA_PORT", "5056")
    mysql_port = os.environ.get("PCR_MYSQL_PORT", "3306")
    pg_port = os.environ.get("PCR_PG_PORT", "5432")
    plain = {
        "AWS_REGION": "us-east-1",
        # The local moto and its dummy credentials: the poller reaches the local stack with
        # this file alone, from any shell (never put real credentials in a config file).
        "AWS_ENDPOINT_URL": c.moto_endpoint(),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ENVISIONWARE_DB_PORT": mysql_port,
        "ENVISIONWARE_DB_NAME": c.MYSQL_DB,
        "ENVISIONWARE_DB_SSLMODE": "disable",
        "SIERRA_DB_PORT": pg_port,
        "SIERRA_DB_NAME": c.SIERRA_DB,
        "SIERRA_DB_SSLMODE": "disable",
        "REDSHIFT_DB_NAME": c.REDSHIFT_DB,
        "REDSHIFT_DB_PORT": pg_port,
        "REDSHIFT_DB_SSLMODE": "disable",
        "S3_BUCKET": c.BUCKET,
        "S3_RESOURCE": c.S3_RESOURCE,
        "PC_RESERVE_SCHEMA_URL": f"http://127.0.0.1:{schema_port}/api/v0.1/current-schemas/PcReserve",
        "KINESIS_BATCH_SIZE": "500",
        "ENVISIONWARE_BATCH_SIZE": "1000",
        "LOG_LEVEL": "info",
        "PCR_DATE_TIME": "2023-01-01 00:00:00",
        "PCR_KEY": "0",
    }
    enc = {}
    for db in ("ENVISIONWARE", "SIERRA", "REDSHIFT"):
        enc[f"{db}_DB_HOST"] = "127.0.0.1"
        enc[f"{db}_DB_USER"] = "pcr_reader"
        enc[f"{db}_DB_PASSWORD"] = "pcr-reader-pw"
    enc["KINESIS_STREAM_ARN"] = stream_arn
    enc["BCRYPT_SALT"] = salt
    return plain, enc


def _text(v):
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, bool):
        return "True" if v else "False"
    return "" if v is None else str(v)


def config_state(kms, plain, enc):
    """'ok', or a short reason why config/local.yaml must be rewritten."""
    import yaml

    if not CONFIG_FILE.exists():
        return "missing"
    try:
        doc = yaml.safe_load(CONFIG_FILE.read_text())
        p = {k: _text(v) for k, v in (doc.get("PLAINTEXT_VARIABLES") or {}).items()}
        e = doc.get("ENCRYPTED_VARIABLES") or {}
    except Exception:
        return "unreadable"
    if p != plain:
        return "plaintext values differ"
    if set(e) != set(enc):
        return "encrypted names differ"
    for name, want in enc.items():
        try:
            got = kms.decrypt(CiphertextBlob=base64.b64decode(str(e[name])))["Plaintext"]
        except Exception:
            return "does not decrypt (moto restarted?)"
        if got.decode("utf-8") != want:
            return "encrypted values differ"
    return "ok"


def write_config(kms, plain, enc):
    lines = [
        "# GENERATED by scripts/local-stack.sh (scripts/local-stack/local_aws.py). Do not edit: rerun",
        "# `scripts/local-stack.sh up` instead. ENCRYPTED_VARIABLES are KMS ciphertexts made",
        "# by the local moto server; they stop decrypting when moto restarts (up regenerates).",
        "---",
        "PLAINTEXT_VARIABLES:",
    ]
    for k, v in plain.items():
        lines.append(f"  {k}: {v}")
    lines.append("ENCRYPTED_VARIABLES:")
    for k, v in enc.items():
        blob = kms.encrypt(KeyId=c.KMS_ALIAS, Plaintext=v.encode("utf-8"))["CiphertextBlob"]
        lines.append(f"  {k}: {base64.b64encode(blob).decode('ascii')}")
    CONFIG_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=CONFIG_FILE.parent, prefix=".local.yaml.")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, CONFIG_FILE)


def setup(fresh):
    kms, kin, s3 = c.aws_client("kms"), c.aws_client("kinesis"), c.aws_client("s3")
    _, new_key = ensure_key(kms, fresh)
    arn = ensure_stream(kin)
    ensure_bucket(s3)
    salt = ensure_salt()
    plain, enc = expected_values(arn, salt)
    state = "regenerate (new key)" if new_key else config_state(kms, plain, enc)
    if state == "ok":
        c.log("  config/local.yaml: unchanged")
    else:
        write_config(kms, plain, enc)
        if config_state(kms, plain, enc) != "ok":
            c.die("config/local.yaml written but does not read back")
        c.log(f"  config/local.yaml: written ({state})")


def status():
    if not ping():
        print("aws:      moto not answering at " + c.moto_endpoint())
        return 1
    kms, kin, s3 = c.aws_client("kms"), c.aws_client("kinesis"), c.aws_client("s3")
    parts = []
    try:
        kms.describe_key(KeyId=c.KMS_ALIAS)
        parts.append("kms key ok")
    except Exception:
        parts.append("kms key MISSING")
    arn = None
    try:
        s = kin.describe_stream_summary(StreamName=c.STREAM_NAME)["StreamDescriptionSummary"]
        arn = s["StreamARN"]
        parts.append(f"stream {s['StreamStatus']} ({s['OpenShardCount']} shards)")
    except Exception:
        parts.append("stream MISSING")
    try:
        s3.head_bucket(Bucket=c.BUCKET)
        parts.append("bucket ok")
    except Exception:
        parts.append("bucket MISSING")
    cfg = "config n/a"
    if arn and c.SALT_FILE.exists():
        plain, enc = expected_values(arn, c.SALT_FILE.read_text().strip())
        cfg = "config " + config_state(kms, plain, enc)
    parts.append(cfg)
    print("aws:      " + ", ".join(parts))
    return 0 if all("MISSING" not in p for p in parts) and cfg == "config ok" else 1


def reset(stream=None, bucket=None, shards=2):
    stream, bucket = stream or c.STREAM_NAME, bucket or c.BUCKET
    kin, s3 = c.aws_client("kinesis"), c.aws_client("s3")
    try:
        kin.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
        deadline = time.time() + 60
        while True:
            try:
                kin.describe_stream_summary(StreamName=stream)
            except kin.exceptions.ResourceNotFoundException:
                break
            if time.time() > deadline:
                c.die(f"kinesis stream {stream} still exists 60 s after delete")
            time.sleep(0.5)
    except kin.exceptions.ResourceNotFoundException:
        pass
    ensure_stream(kin, stream, shards)
    ensure_bucket(s3, bucket)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
            n += 1
    c.log(f"  reset: stream {stream} emptied, {n} objects deleted from {bucket}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ping")
    sub.add_parser("probe")
    sp = sub.add_parser("setup")
    sp.add_argument("--fresh", action="store_true", help="moto was (re)started: new key and config")
    sub.add_parser("status")
    sub.add_parser("reset")
    sub.add_parser("scratch")
    a = ap.parse_args()
    if a.cmd == "ping":
        sys.exit(0 if ping() else 1)
    if a.cmd == "probe":
        why = probe()
        if why:
            print(why)
        sys.exit(1 if why else 0)
    if a.cmd == "setup":
        if not ping():
            c.die(f"moto is not answering at {c.moto_endpoint()}")
        setup(a.fresh)
    elif a.cmd == "status":
        sys.exit(status())
    elif a.cmd == "scratch":
        if not ping():
            c.die(f"moto is not answering at {c.moto_endpoint()}")
        reset(SCRATCH, SCRATCH, 1)
    elif a.cmd == "reset":
        if not ping():
            c.die(f"moto is not answering at {c.moto_endpoint()}")
        reset()


if __name__ == "__main__":
    main()
