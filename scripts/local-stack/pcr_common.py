"""Shared helpers for the local-stack Python scripts (seed, verify, show, AWS setup).

Everything defaults to the local stack written by scripts/local-stack.sh; environment
variables override. Never prints secrets, barcodes or Sierra patron ids.
"""

import os
import sys
import urllib.parse
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parents[1]
LOCAL_DIR = REPO_ROOT / ".local"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
SALT_FILE = LOCAL_DIR / "salt"

REGION = "us-east-1"
STREAM_NAME = os.environ.get("PCR_STREAM_NAME", "pc-reserve-local")
BUCKET = os.environ.get("PCR_S3_BUCKET", "pcr-local-state")
S3_RESOURCE = os.environ.get("PCR_S3_RESOURCE", "pc-reserve-poller/local-state.json")
KMS_ALIAS = "alias/pc-reserve-poller-local"

MYSQL_DB = "lasttwodays"
SIERRA_DB = "iii"
REDSHIFT_DB = "dev"

DEFAULT_MYSQL_ADMIN_URL = "mysql://pcr_admin:pcr_admin@127.0.0.1:3306"
DEFAULT_PG_ADMIN_URL = "postgres://pcr_admin:pcr_admin@127.0.0.1:5432"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg, code=2):
    log(f"error: {msg}")
    sys.exit(code)


def moto_endpoint():
    return (
        os.environ.get("PCR_TEST_AWS_ENDPOINT")
        or os.environ.get("AWS_ENDPOINT_URL")
        or f"http://127.0.0.1:{os.environ.get('PCR_MOTO_PORT', '5055')}"
    )


def aws_client(service):
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=moto_endpoint(),
        region_name=os.environ.get("AWS_REGION", REGION),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        config=Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def redshift_table(kind, redshift_db):
    """patron_info_<db> / pc_reserve_<db>, or the bare name for production."""
    return kind if redshift_db == "production" else f"{kind}_{redshift_db}"


def _parse(url):
    u = urllib.parse.urlparse(url)
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port,
        "user": urllib.parse.unquote(u.username or ""),
        "password": urllib.parse.unquote(u.password or ""),
    }


def mysql_connect(database):
    import pymysql

    p = _parse(os.environ.get("PCR_TEST_MYSQL_ADMIN_URL", DEFAULT_MYSQL_ADMIN_URL))
    return pymysql.connect(
        host=p["host"],
        port=p["port"] or 3306,
        user=p["user"],
        password=p["password"],
        database=database,
        charset="utf8mb4",
        connect_timeout=10,
        autocommit=False,
    )


def pg_connect(database):
    import psycopg2

    p = _parse(os.environ.get("PCR_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL))
    return psycopg2.connect(
        host=p["host"],
        port=p["port"] or 5432,
        user=p["user"],
        password=p["password"],
        dbname=database,
        connect_timeout=10,
    )


def read_salt(path=None):
    """BCRYPT_SALT from the environment, else from .local/salt (written by local-stack.sh)."""
    salt = os.environ.get("BCRYPT_SALT")
    if not salt:
        f = Path(path) if path else SALT_FILE
        if not f.exists():
            die(f"no salt: set BCRYPT_SALT or run scripts/local-stack.sh up (expects {f})")
        salt = f.read_text().strip()
    if len(salt) != 29 or salt[:4] not in ("$2a$", "$2b$") or salt[6] != "$":
        die("the bcrypt salt is malformed (expected $2b$NN$ + 22 characters)")
    return salt


def pseudonym(text, salt):
    """bcrypt hash of the UTF-8 bytes (first 72 bytes only), salt prefix removed."""
    import bcrypt

    data = text.encode("utf-8")[:72]
    return bcrypt.hashpw(data, salt.encode("ascii")).decode("ascii")[29:]


def _pseudonym_worker(args):
    text, salt = args
    return pseudonym(text, salt)


def pseudonyms(texts, salt, parallel_min=2000):
    """Map each distinct text to its pseudonym, in parallel when there are many."""
    distinct = sorted(set(texts))
    if len(distinct) < parallel_min or (os.cpu_count() or 1) < 2:
        return {t: pseudonym(t, salt) for t in distinct}
    import multiprocessing

    with multiprocessing.Pool(os.cpu_count()) as pool:
        out = pool.map(_pseudonym_worker, [(t, salt) for t in distinct], chunksize=256)
    return dict(zip(distinct, out))


def load_avro_schema():
    import json

    import fastavro

    with open(FIXTURES_DIR / "PcReserve-schema.avsc") as f:
        return fastavro.parse_schema(json.load(f))


def read_stream(stream_name=None):
    """Every record of every shard, from TRIM_HORIZON, as a list of raw Data bytes.

    Returns None when the stream does not exist."""
    kin = aws_client("kinesis")
    name = stream_name or STREAM_NAME
    try:
        shards = []
        kw = {"StreamName": name}
        while True:
            resp = kin.list_shards(**kw)
            shards.extend(resp["Shards"])
            tok = resp.get("NextToken")
            if not tok:
                break
            kw = {"NextToken": tok}
    except kin.exceptions.ResourceNotFoundException:
        return None
    out = []
    for shard in shards:
        it = kin.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            resp = kin.get_records(ShardIterator=it, Limit=10000)
            recs = resp.get("Records", [])
            out.extend(r["Data"] for r in recs)
            it = resp.get("NextShardIterator")
            if not recs and resp.get("MillisBehindLatest", 0) == 0:
                break
    return out


def decode_records(blobs, schema):
    """Decode schemaless Avro datums; returns (records, undecodable_count)."""
    import io

    import fastavro

    recs, bad = [], 0
    for b in blobs:
        buf = io.BytesIO(b)
        try:
            rec = fastavro.schemaless_reader(buf, schema)
        except Exception:
            bad += 1
            continue
        if buf.tell() != len(b):
            bad += 1
            continue
        recs.append(rec)
    return recs, bad


def read_cursor():
    """The S3 cursor object: (parsed JSON or None, raw text or None)."""
    import json

    s3 = aws_client("s3")
    try:
        body = s3.get_object(Bucket=BUCKET, Key=S3_RESOURCE)["Body"].read().decode("utf-8")
    except s3.exceptions.NoSuchKey:
        return None, None
    except Exception as e:  # bucket missing etc.
        if "NoSuchBucket" in str(e) or "NoSuchKey" in str(e) or "404" in str(e):
            return None, None
        raise
    try:
        return json.loads(body), body
    except ValueError:
        return None, body
