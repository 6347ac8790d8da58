#!/usr/bin/env python3
"""Show what is on the local Kinesis stream and in the S3 cursor.

  .venv/bin/python scripts/demo/show_sent.py [--limit 5] [--stream pc-reserve-local]

Prints the first N decoded PcReserve records (JSON lines; pseudonymous values only), the
count per patron_retrieval_status, the total, and the S3 cursor object.
"""

import argparse
import collections
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "local-stack"))
import pcr_common as c  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--stream", default=c.STREAM_NAME)
    a = ap.parse_args()
    blobs = c.read_stream(a.stream)
    if blobs is None:
        c.die(f"kinesis stream {a.stream} does not exist (run scripts/local-stack.sh up)")
    recs, bad = c.decode_records(blobs, c.load_avro_schema())
    for r in recs[: max(0, a.limit)]:
        print(json.dumps(r, ensure_ascii=False))
    by_status = collections.Counter(r.get("patron_retrieval_status") for r in recs)
    print("by status: " + json.dumps({str(k): v for k, v in sorted(by_status.items(), key=lambda kv: str(kv[0]))}))
    print(f"total: {len(blobs)} records ({bad} undecodable)")
    cur, raw = c.read_cursor()
    if raw is None:
        print(f"cursor: absent (s3://{c.BUCKET}/{c.S3_RESOURCE})")
    else:
        print(f"cursor: {raw.strip()}")


if __name__ == "__main__":
    main()
