#!/usr/bin/env python3
"""Independent oracle: check what the poller sent against the seeded databases.

  .venv/bin/python scripts/demo/verify_demo.py [--since-date-time 'YYYY-MM-DD HH:MM:SS' --since-key K]
                                          [--allow-duplicates] [--no-cursor-check]

Computes, in Python, the expected PcReserve record of every reservation strictly after the
cursor (default: from the beginning; rows with a NULL pcrDateTime are never selected),
following docs/behaviour.md §4, §5 and §11; reads every record of every shard of the Kinesis stream
from TRIM_HORIZON, decodes each with tests/fixtures/PcReserve-schema.avsc, and compares them
as multisets on all 13 fields. Also checks the S3 cursor object against the last reservation.
Reports counts and pseudonymous keys only, never raw values. Exit 0 only when all matches;
1 on a mismatch; 2 on a usage or setup error.
"""

import argparse
import collections
import datetime as dt
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "local-stack"))
import pcr_common as c  # noqa: E402

FIELDS = ["patron_id", "patron_retrieval_status", "ptype_code", "patron_home_library_code", "pcode3",
          "postal_code", "geoid", "key", "minutes_used", "transaction_et", "branch", "area", "staff_override"]
KEY_IDX = FIELDS.index("key")
STATUS_IDX = FIELDS.index("patron_retrieval_status")


def read_reservations(db, since):
    my = c.mysql_connect(db)
    try:
        with my.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM strad_bci WHERE pcrDateTime IS NULL")
            null_dt = cur.fetchone()[0]
            sql = ("SELECT pcrKey, pcrUserID, pcrMinutesUsed, pcrDateTime, pcrBranch, pcrArea, pcrUserData1 "
                   "FROM strad_bci WHERE pcrDateTime IS NOT NULL")
            args = ()
            if since:
                sql += " AND (pcrDateTime > %s OR (pcrDateTime = %s AND pcrKey > %s))"
                args = (since[0], since[0], since[1])
            cur.execute(sql + " ORDER BY pcrDateTime, pcrKey", args)
            rows = cur.fetchall()
    finally:
        my.close()
    return rows, null_dt


def read_sierra(db):
    pg = c.pg_connect(db)
    try:
        with pg.cursor() as cur:
            cur.execute("SELECT record_id, index_tag, index_entry FROM sierra_view.phrase_entry")
            phrase = collections.defaultdict(set)
            for rid, tag, entry in cur:
                if rid is None or tag is None or entry is None:
                    continue
                phrase[tag + entry].add(rid)
            cur.execute("SELECT id, record_num, barcode, ptype_code, pcode3, home_library_code FROM sierra_view.patron_view")
            patrons = collections.defaultdict(list)
            for pid, _num, bc, ptype, pcode3, home in cur:
                if pid is not None:
                    patrons[pid].append((bc, ptype, pcode3, home))
    finally:
        pg.close()
    return phrase, patrons


def read_redshift(db):
    table = c.redshift_table("patron_info", db)
    pg = c.pg_connect(db)
    try:
        with pg.cursor() as cur:
            cur.execute(f"SELECT patron_id, postal_code, geoid FROM public.{table} WHERE patron_id IS NOT NULL")
            rows = cur.fetchall()
    finally:
        pg.close()
    n = collections.Counter(r[0] for r in rows)
    return {r[0]: (r[1], r[2]) for r in rows if n[r[0]] == 1}, sum(1 for v in n.values() if v > 1)


def norm_home(h):
    if h is None:
        return None
    h = h.strip(" ")
    return None if h in ("", "none") else h


def sierra_match(barcode, phrase, patrons):
    """(patron id or None, ptype_code, pcode3, home library code)."""
    if barcode is None or barcode == "":
        return None, None, None, None
    ids = phrase.get("b" + barcode, set())
    if len(ids) != 1:
        return None, None, None, None
    pid = next(iter(ids))
    rows = patrons.get(pid, [])
    cand = [r for r in rows if r[0] == barcode] or rows
    distinct = {(r[1], r[2], norm_home(r[3])) for r in cand}
    if len(distinct) != 1:
        return pid, None, None, None
    return (pid, *next(iter(distinct)))


def expected_records(rows, phrase, patrons, redshift, salt):
    texts = set()
    matched = []
    for key, bc, *_ in rows:
        m = sierra_match(bc, phrase, patrons)
        matched.append(m)
        texts.add(str(key))
        texts.add(str(m[0]) if m[0] is not None else "barcode " + (bc or ""))
    ps = c.pseudonyms(texts, salt)
    out = []
    for (key, bc, minutes, when, branch, area, staff), (pid, ptype, pcode3, home) in zip(rows, matched):
        if pid is not None:
            status, patron = "found", ps[str(pid)]
            postal, geoid = redshift.get(patron, (None, None))
        else:
            status = "guest_pass" if bc and bc.startswith("25555") else "missing"
            patron, postal, geoid = ps["barcode " + (bc or "")], None, None
        out.append((patron, status, ptype, home, pcode3, postal, geoid, ps[str(key)], minutes,
                    when.strftime("%Y-%m-%d"), branch, area, staff))
    return out


def cursor_text(when):
    return str(when)  # Python's str(datetime): whole seconds unless microseconds are set


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--since-date-time", help="cursor date-time, 'YYYY-MM-DD HH:MM:SS'")
    ap.add_argument("--since-key", type=int, help="cursor pcrKey")
    ap.add_argument("--allow-duplicates", action="store_true", help="report duplicates but do not fail")
    ap.add_argument("--no-cursor-check", action="store_true", help="do not check the S3 cursor object")
    ap.add_argument("--mysql-db", default=c.MYSQL_DB)
    ap.add_argument("--sierra-db", default=c.SIERRA_DB)
    ap.add_argument("--redshift-db", default=c.REDSHIFT_DB)
    ap.add_argument("--stream", default=c.STREAM_NAME)
    a = ap.parse_args()
    since = None
    if (a.since_date_time is None) != (a.since_key is None):
        c.die("--since-date-time and --since-key go together")
    if a.since_date_time is not None:
        try:
            since = (dt.datetime.strptime(a.since_date_time.strip()[:19], "%Y-%m-%d %H:%M:%S"), a.since_key)
        except ValueError:
            c.die("--since-date-time must be 'YYYY-MM-DD HH:MM:SS'")
    t0 = time.time()
    salt = c.read_salt()
    rows, null_dt = read_reservations(a.mysql_db, since)
    schema = c.load_avro_schema()
    blobs = c.read_stream(a.stream)
    if blobs is None:
        c.die(f"kinesis stream {a.stream} does not exist (run scripts/local-stack.sh up)")
    received, undecodable = c.decode_records(blobs, schema)
    recv = collections.Counter(tuple(r.get(f) for f in FIELDS) for r in received)
    print(f"verify: {len(rows)} reservations after the cursor ({null_dt} with NULL pcrDateTime never selected); "
          f"{len(blobs)} records on the stream ({undecodable} undecodable)")

    failures = []
    if not rows:
        # An oracle that compares nothing proves nothing: an empty dataset (seeding failed,
        # wrong database, cursor already at the end) is a failure, not a pass.
        print("verify: no reservation to check (empty dataset)")
        failures.append("empty dataset")
    if not received:
        # Nothing sent: every expected record is missing; no need to compute pseudonyms.
        missing, unexpected, dups, mismatched = len(rows), 0, 0, 0
        exp_status = None
    else:
        phrase, patrons = read_sierra(a.sierra_db)
        redshift, dup_ids = read_redshift(a.redshift_db)
        exp_list = expected_records(rows, phrase, patrons, redshift, salt)
        exp = collections.Counter(exp_list)
        exp_status = collections.Counter(t[STATUS_IDX] for t in exp_list)
        miss_c = exp - recv
        extra_c = recv - exp
        dup_c = collections.Counter({t: n for t, n in extra_c.items() if t in exp})
        unexp_c = collections.Counter({t: n for t, n in extra_c.items() if t not in exp})
        missing, unexpected, dups = sum(miss_c.values()), sum(unexp_c.values()), sum(dup_c.values())
        # same key, different fields: name the fields that differ
        miss_by_key = {t[KEY_IDX]: t for t in miss_c}
        field_diffs = collections.Counter()
        mismatched = 0
        for t in unexp_c:
            m = miss_by_key.get(t[KEY_IDX])
            if m is not None:
                mismatched += 1
                for i, f in enumerate(FIELDS):
                    if m[i] != t[i]:
                        field_diffs[f] += 1
        print(f"verify: expected by status {dict(sorted(exp_status.items()))}; "
              f"{dup_ids} Redshift patron ids on several rows (no Redshift data)")
        if mismatched:
            print(f"verify: {mismatched} records have the right key but wrong fields: "
                  + ", ".join(f"{f}={n}" for f, n in field_diffs.most_common()))
        if missing:
            ms = collections.Counter(t[STATUS_IDX] for t in miss_c.elements())
            print(f"verify: missing by expected status {dict(sorted(ms.items()))}; sample keys "
                  + " ".join(t[KEY_IDX] for t in list(miss_c)[:5]))
        if unexpected:
            print("verify: unexpected sample keys " + " ".join(t[KEY_IDX] for t in list(unexp_c)[:5]))
        if dups:
            print("verify: duplicated sample keys " + " ".join(t[KEY_IDX] for t in list(dup_c)[:5]))
    print(f"verify: matched {len(rows) - missing}/{len(rows)}, missing {missing}, unexpected {unexpected}, "
          f"duplicated {dups}{' (allowed)' if a.allow_duplicates and dups else ''}")
    if missing:
        failures.append(f"{missing} missing")
    if unexpected:
        failures.append(f"{unexpected} unexpected")
    if dups and not a.allow_duplicates:
        failures.append(f"{dups} duplicated")
    if undecodable:
        failures.append(f"{undecodable} undecodable")

    if not a.no_cursor_check:
        cur, raw = c.read_cursor()
        if rows:
            want = {"pcr_key": str(rows[-1][0]), "pcr_date_time": cursor_text(rows[-1][3])}
            if cur == want:
                print("verify: S3 cursor ok (the last reservation)")
            elif raw is None:
                print("verify: S3 cursor object absent")
                failures.append("cursor absent")
            elif not isinstance(cur, dict) or set(cur) != {"pcr_key", "pcr_date_time"} or \
                    not all(isinstance(v, str) for v in cur.values()):
                print('verify: S3 cursor has the wrong shape (want {"pcr_key": "<int>", "pcr_date_time": "YYYY-MM-DD HH:MM:SS"})')
                failures.append("cursor shape")
            else:
                same_t = cur.get("pcr_date_time") == want["pcr_date_time"]
                print(f"verify: S3 cursor is not the last reservation (date-time {'equal' if same_t else 'differs'}, key differs or format)")
                failures.append("cursor position")
        else:
            print("verify: no reservation after the cursor; S3 cursor not checked"
                  + (" (object absent)" if raw is None else ""))
    took = time.time() - t0
    if failures:
        print(f"verify: FAIL ({', '.join(failures)}) in {took:.1f} s")
        sys.exit(1)
    print(f"verify: OK in {took:.1f} s")


if __name__ == "__main__":
    main()
