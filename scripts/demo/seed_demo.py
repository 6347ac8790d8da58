#!/usr/bin/env python3
"""Seed realistic, adversarial demo data into the local Envisionware, Sierra and Redshift.

Run with the venv python after `scripts/local-stack.sh up`:
  .venv/bin/python scripts/demo/seed_demo.py --reservations 10000 [--patrons P] [--seed S]
                                        [--batch-boundary B] [--reset | --no-reset]

--reset (default) truncates strad_bci, sierra_view.phrase_entry/patron_view and
patron_info_<db>/pc_reserve_<db> first and seeds everything. --no-reset only appends N new
reservations (keys and times after the existing ones) for barcodes already present.

Admin URLs: PCR_TEST_MYSQL_ADMIN_URL, PCR_TEST_PG_ADMIN_URL (defaults: the local stack).
Salt: BCRYPT_SALT, else .local/salt. Prints a one-line summary of case counts to stderr;
never prints barcodes or patron ids.
"""

import argparse
import collections
import datetime as dt
import os
import random
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "local-stack"))
import pcr_common as c  # noqa: E402

BRANCHES = [
    ("Stephen A. Schwarzman", 8),
    ("Stavros Niarchos Foundation Library (SNFL)", 10),
    ("Mid-Manhattan", 4),
    ("Bronx Library Center", 8),
    ("St. George Library Center", 5),
    ("Jefferson Market", 4),
    ("Schomburg Center for Research in Black Culture", 3),
    ("Harlem", 3),
    ("Kingsbridge", 3),
    ("Biblioteca Hispánica — Ñ", 2),
    ("Chatham Square", 4),
    ("Grand Central", 3),
    ("Parkchester", 3),
    ("Tompkins Square", 2),
    ("Inwood", 2),
    ("Todt Hill–Westerleigh", 1),
    ("Morris Park", 2),
    ("Spuyten Duyvil", 1),
]
AREAS = ["Floor 2", "Floor 3", "Computer Lab", "Children's Room", "Teen Center",
         "Adult Reading Room", "Lower Level", "Laptop Kiosk", "Floor 1 – Express"]
PTYPES = [(10, 50), (2, 8), (3, 6), (6, 6), (7, 5), (78, 3), (81, 6), (101, 2), (153, 3), (11, 4)]
PCODE3 = [(1, 30), (2, 20), (3, 20), (4, 10), (5, 10), (None, 3)]
HOME = ["sa", "mm", "sn", "bc", "hp", "jm", "sc", "ew", "in", "kb", "mp", "pk", "ts", "hu", "sasb", "lpa", "ma"]
ZIPS = ["10001", "10002", "10003", "10009", "10011", "10016", "10018", "10025", "10027", "10031",
        "10032", "10034", "10451", "10452", "10453", "10458", "10463", "10467", "10301", "10304",
        "10314", "11201", "11373", "07030"]
COUNTIES = ["36061", "36005", "36085", "36047", "36081"]


def wchoice(rng, pairs):
    vals, weights = zip(*pairs)
    return rng.choices(vals, weights=weights)[0]


class Seeder:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.counts = collections.Counter()
        self.phrase = []  # (record_id, index_tag, index_entry)
        self.patrons = []  # (id, record_num, barcode, ptype_code, pcode3, home_library_code)
        self.redshift_ids = []  # patron ids (int) that get a normal patron_info row
        self.used_ids = set()
        self.used_nums = set()
        self.used_barcodes = set()

    # ------------------------------------------------------------ identifiers
    def new_id(self, special=False):
        lo, hi = (481900000000, 481999999999) if special else (481000000000, 481899999999)
        while True:
            v = self.rng.randint(lo, hi)
            if v not in self.used_ids:
                self.used_ids.add(v)
                return v

    def new_num(self):
        while True:
            v = self.rng.randint(1000000, 9999999)
            if v not in self.used_nums:
                self.used_nums.add(v)
                return v

    def new_barcode(self, kind="pool"):
        lo, hi, prefix = {
            "pool": (0, 399999999, "23333"),
            "unknown": (500000000, 899999999, "23333"),
            "special": (900000000, 999999999, "23333"),
            "guest": (0, 999999999, "25555"),
        }[kind]
        while True:
            v = f"{prefix}{self.rng.randint(lo, hi):09d}"
            if v not in self.used_barcodes:
                self.used_barcodes.add(v)
                return v

    def home_code(self):
        r = self.rng.random()
        if r < 0.02:
            return self.rng.choice(["none", "", "  ", None])
        code = self.rng.choice(HOME)
        return code.ljust(5) if r < 0.10 else code

    def patron_row(self, pid, barcode, **kw):
        row = (pid, kw.get("record_num") or self.new_num(), barcode,
               kw["ptype"] if "ptype" in kw else wchoice(self.rng, PTYPES),
               kw["pcode3"] if "pcode3" in kw else wchoice(self.rng, PCODE3),
               kw["home"] if "home" in kw else self.home_code())
        self.patrons.append(row)
        return row

    # ------------------------------------------------------------ Sierra
    def build_sierra(self, n_pool):
        """Returns (pool barcodes in Zipf rank order, list of (barcode, case, n_reservations))."""
        rng = self.rng
        pool = []
        for _ in range(n_pool):
            pid, bc = self.new_id(), self.new_barcode("pool")
            self.phrase.append((pid, "b", bc))
            row = self.patron_row(pid, bc)
            r = rng.random()
            if r < 0.01:  # identical duplicate patron_view row: must collapse
                self.patrons.append(row)
                self.counts["pv_identical_dup"] += 1
            elif r < 0.02:  # identical duplicate phrase row: must collapse
                self.phrase.append((pid, "b", bc))
                self.counts["phrase_identical_dup"] += 1
            if rng.random() < 0.85:
                self.redshift_ids.append(pid)
            pool.append(bc)
            self.counts["pool_patrons"] += 1
        rng.shuffle(pool)

        specials = []  # (barcode, case, reservations)

        def found(case, n, home="__rand__", ptype=None, in_redshift=True, barcode=None):
            pid, bc = self.new_id(True), barcode or self.new_barcode("special")
            self.used_barcodes.add(bc)
            self.phrase.append((pid, "b", bc))
            kw = {} if home == "__rand__" else {"home": home}
            if ptype is not None:
                kw["ptype"] = ptype
            self.patron_row(pid, bc, **kw)
            if in_redshift:
                self.redshift_ids.append(pid)
            specials.append((bc, case, n))
            return pid, bc

        # home library codes: none, blank, '  ', space-padded, NULL, padded duplicate collapsing
        found("home_none", 3, home="none")
        found("home_blank", 2, home="")
        found("home_spaces", 2, home="  ")
        found("home_padded", 3, home="sa   ")
        found("home_null", 2, home=None)
        pid, bc = found("home_pad_collapse", 2, home="mm", ptype=10)
        row = self.patrons[-1]
        self.patrons.append((pid, row[1], bc, 10, row[4], "mm   "))
        # identical duplicate patron_view rows (guaranteed in the reservations)
        for _ in range(2):
            found("pv_identical_dup_used", 2)
            self.patrons.append(self.patrons[-1])
        # identical duplicate phrase rows
        pid, bc = found("phrase_identical_dup_used", 2)
        self.phrase.append((pid, "b", bc))
        # a barcode shared by two patrons: maps to no patron id -> missing
        bc = self.new_barcode("special")
        for _ in range(2):
            pid = self.new_id(True)
            self.phrase.append((pid, "b", bc))
            self.patron_row(pid, bc)
            self.redshift_ids.append(pid)
        specials.append((bc, "shared_barcode", 3))
        # conflicting patron_view rows for one id (different ptype): codes become NULL
        pid, bc = found("conflicting_patron", 4, ptype=10)
        r = self.patrons[-1]
        self.patrons.append((pid, r[1], bc, 81, r[4], r[5]))
        # two rows, one with the reservation's barcode: that one wins
        pid, bc = found("prefer_barcode_match", 3, ptype=10, home="sn")
        self.patrons.append((pid, self.new_num(), self.new_barcode("special"), 2, 3, "bc"))
        # patron_view barcode differs from the phrase barcode: id match only
        pid, bc = self.new_id(True), self.new_barcode("special")
        self.phrase.append((pid, "b", bc))
        self.patron_row(pid, self.new_barcode("special"), ptype=3, home="hp")
        self.redshift_ids.append(pid)
        specials.append((bc, "barcode_differs", 3))
        # found in phrase_entry but no patron_view row at all
        pid, bc = self.new_id(True), self.new_barcode("special")
        self.phrase.append((pid, "b", bc))
        self.redshift_ids.append(pid)
        specials.append((bc, "found_no_patron_row", 2))
        # barcode containing a quote, present in Sierra; and one not in Sierra
        found("quote_found", 2, barcode="23333'" + f"{self.rng.randint(0, 99999999):08d}")
        specials.append(("O'BRIEN-GUEST-" + f"{self.rng.randint(0, 9999):04d}", "quote_missing", 1))
        # barcode that starts with 'b' and exists in Sierra: found
        found("b_prefixed_found", 2, barcode="b" + self.new_barcode("special"))
        # patron found but absent from Redshift
        found("found_not_in_redshift", 3, in_redshift=False)
        # one pseudonym on two Redshift rows: no Redshift data
        self.dup_redshift_id, _ = found("redshift_duplicate", 3, in_redshift=False)
        # NULLs in phrase_entry: a NULL record_id row alone (-> missing), a NULL record_id row
        # next to a valid one (still found), NULL entries and NULL tags (ignored)
        bc = self.new_barcode("special")
        self.phrase.append((None, "b", bc))
        specials.append((bc, "phrase_null_record_only", 2))
        pid, bc = found("phrase_null_plus_valid", 2)
        self.phrase.append((None, "b", bc))
        for _ in range(3):
            self.phrase.append((self.new_id(True), "b", None))
            self.phrase.append((self.new_id(True), None, self.new_barcode("special")))
        self.counts["phrase_null_rows"] = 7
        # other index tags for pool patrons (never match a 'b' lookup)
        for bc in pool[:50]:
            self.phrase.append((self.new_id(True), "c", bc))
        # long barcodes: > 64 characters, and one whose 'barcode ' text is cut by bcrypt's
        # 72-byte limit in the middle of a two-byte character
        specials.append((self.new_barcode("unknown") * 6, "long_barcode", 2))
        specials.append(("2" * 63 + "é" + "9" * 8, "long_barcode_utf8_cut", 1))
        # oddities that are simply not in Sierra
        specials.append(("", "empty_barcode", 2))
        specials.append((None, "null_userid", max(3, self.a.reservations // 1000)))
        return pool, specials

    # ------------------------------------------------------------ reservations
    def build_reservations(self, pool, specials, n_total, key_base, t_start, t_end):
        rng = self.rng
        barcodes = []
        for bc, case, n in specials:
            barcodes.extend([bc] * n)
            self.counts[case] += n
        n_guest = max(5, n_total // 100)
        n_unknown = max(5, n_total // 50)
        guests = [self.new_barcode("guest") for _ in range(max(3, n_guest // 3))]
        unknown = [self.new_barcode("unknown") for _ in range(max(3, n_unknown // 2))]
        unknown += ["1234", "ABC-0042", "0000000000000"]
        barcodes += rng.choices(guests, k=n_guest)
        barcodes += rng.choices(unknown, k=n_unknown)
        self.counts["guest_pass"] += n_guest
        self.counts["unknown"] += n_unknown
        n_pool = max(0, n_total - len(barcodes))
        if pool and n_pool:
            cum, s = [], 0.0
            for rank in range(len(pool)):
                s += 1.0 / (rank + 1) ** 1.1
                cum.append(s)
            picks = rng.choices(pool, cum_weights=cum, k=n_pool)
            barcodes += picks
            top = collections.Counter(picks).most_common(max(1, len(pool) // 10))
            self.counts["pool_reservations"] = n_pool
            self.counts["top10pct_patron_share_pct"] = round(100 * sum(n for _, n in top) / n_pool)
        rng.shuffle(barcodes)

        span = max(1, int((t_end - t_start).total_seconds()))
        times = []
        for _ in barcodes:
            if times and rng.random() < 0.08:
                times.append(times[-1])  # identical timestamps
            else:
                times.append(t_start + dt.timedelta(seconds=rng.randrange(span)))
        times.sort()
        keys, k = [], key_base
        for _ in times:
            k += rng.randint(1, 3)
            keys.append(k)
        # key order is not time order: swap neighbours' times, and some late syncs
        n = len(times)
        for _ in range(n // 30):
            i = rng.randrange(n)
            j = min(n - 1, max(0, i + rng.randint(-20, 20)))
            times[i], times[j] = times[j], times[i]
        for _ in range(max(1, n // 500)):
            i = rng.randrange(n)
            times[i] = max(t_start, times[i] - dt.timedelta(hours=rng.randint(1, 6)))
        rows = []
        for bc, t, key in zip(barcodes, times, keys):
            branch = wchoice(rng, BRANCHES)
            rows.append([
                key,
                bc,
                None if rng.random() < 0.01 else max(1, min(240, int(rng.triangular(1, 240, 45)))),
                t,
                None if rng.random() < 0.005 else branch,
                None if rng.random() < 0.02 else rng.choice(AREAS),
                "StaffOverride" if rng.random() < 0.04 else None,
            ])
        self.counts["null_minutes"] = sum(r[2] is None for r in rows)
        self.counts["null_branch"] = sum(r[4] is None for r in rows)
        self.counts["null_area"] = sum(r[5] is None for r in rows)
        self.counts["staff_override"] = sum(r[6] is not None for r in rows)
        # NULL pcrDateTime: never selected
        for r in rng.sample(rows, min(len(rows), max(3, n // 1000))):
            r[3] = None
        self.counts["null_datetime"] = sum(r[3] is None for r in rows)
        self.place_boundary_group(rows)
        self.counts["shared_timestamp_rows"] = sum(
            v for v in collections.Counter(r[3] for r in rows if r[3] is not None).values() if v > 1)
        return rows

    def place_boundary_group(self, rows):
        """Several rows with one pcrDateTime straddling row position B in cursor order."""
        b = self.a.batch_boundary
        live = sorted((r for r in rows if r[3] is not None), key=lambda r: (r[3], r[0]))
        if len(live) < b + 3 or b < 3:
            self.counts["boundary_group"] = 0
            c.log(f"seed: note: fewer than {b + 3} rows, no batch-boundary group")
            return
        t = live[b - 3][3]
        for r in live[b - 3:b + 3]:
            r[3] = t
        live = sorted((r for r in rows if r[3] is not None), key=lambda r: (r[3], r[0]))
        pos = [i for i, r in enumerate(live) if r[3] == t]
        assert pos[0] <= b - 1 and pos[-1] >= b, "boundary group does not straddle"
        self.counts["boundary_group"] = len(pos)

    # ------------------------------------------------------------ Redshift
    def build_redshift(self, salt):
        rng = self.rng
        ids = [str(i) for i in self.redshift_ids] + [str(self.dup_redshift_id)]
        noise = [str(self.new_id()) for _ in range(50)]  # patrons who never reserve
        t0 = time.time()
        ps = c.pseudonyms(ids + noise, salt)
        self.hash_seconds = time.time() - t0

        def info():
            county = rng.choice(COUNTIES)
            postal = None if rng.random() < 0.03 else rng.choice(ZIPS)
            geoid = None if rng.random() < 0.05 else f"36{county[2:]}{rng.randint(100, 99999):06d}"
            return postal, geoid

        rows = [(ps[i], *info()) for i in [str(x) for x in self.redshift_ids] + noise]
        dup = ps[str(self.dup_redshift_id)]
        rows.append((dup, "10018", "36061008400"))
        rows.append((dup, "10451", "36005006300"))
        for _ in range(5):
            rows.append((None, *info()))
        self.counts["redshift_rows"] = len(rows)
        self.counts["redshift_null_patron_id"] = 5
        self.counts["hashed_ids"] = len(ps)
        rng.shuffle(rows)
        return rows


def chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reservations", "-n", type=int, required=True)
    ap.add_argument("--patrons", type=int, help="Sierra patrons in the pool (default N/8, 30..12000)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-boundary", type=int, default=1000,
                    help="row position (ENVISIONWARE_BATCH_SIZE) the shared-timestamp group straddles")
    ap.add_argument("--reset", dest="reset", action="store_true", default=True)
    ap.add_argument("--no-reset", dest="reset", action="store_false")
    ap.add_argument("--mysql-db", default=c.MYSQL_DB)
    ap.add_argument("--sierra-db", default=c.SIERRA_DB)
    ap.add_argument("--redshift-db", default=c.REDSHIFT_DB)
    a = ap.parse_args()
    if a.reservations < 1:
        c.die("--reservations must be >= 1")
    t_begin = time.time()
    salt = c.read_salt()
    s = Seeder(a)
    now = dt.datetime.now().replace(microsecond=0)
    patron_table = c.redshift_table("patron_info", a.redshift_db)
    pc_table = c.redshift_table("pc_reserve", a.redshift_db)

    my = c.mysql_connect(a.mysql_db)
    if not a.reset:
        with my.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(pcrKey), 0), MAX(pcrDateTime) FROM strad_bci")
            key_base, max_t = cur.fetchone()
            cur.execute("SELECT DISTINCT pcrUserID FROM strad_bci WHERE pcrUserID IS NOT NULL")
            pool = [r[0] for r in cur.fetchall()]
        s.rng.shuffle(pool)
        t_start = (max_t + dt.timedelta(seconds=1)) if max_t else now - dt.timedelta(hours=48)
        t_end = max(now, t_start + dt.timedelta(hours=1))
        rows = s.build_reservations(pool, [], a.reservations, int(key_base), t_start, t_end)
    else:
        n_pool = a.patrons if a.patrons is not None else max(30, min(12000, a.reservations // 8))
        pool, specials = s.build_sierra(n_pool)
        rows = s.build_reservations(pool, specials, a.reservations, 41000000,
                                    now - dt.timedelta(hours=48), now)
        rs_rows = s.build_redshift(salt)
        pg = c.pg_connect(a.sierra_db)
        try:
            import psycopg2.extras as px

            with pg.cursor() as cur:
                cur.execute("TRUNCATE sierra_view.phrase_entry RESTART IDENTITY")
                cur.execute("TRUNCATE sierra_view.patron_view")
                px.execute_values(cur, "INSERT INTO sierra_view.phrase_entry (record_id, index_tag, index_entry) VALUES %s",
                                  s.phrase, page_size=5000)
                px.execute_values(cur, "INSERT INTO sierra_view.patron_view (id, record_num, barcode, ptype_code, pcode3, home_library_code) VALUES %s",
                                  s.patrons, page_size=5000)
            pg.commit()
        finally:
            pg.close()
        rs = c.pg_connect(a.redshift_db)
        try:
            import psycopg2.extras as px

            with rs.cursor() as cur:
                cur.execute(f"TRUNCATE public.{patron_table}")
                cur.execute(f"TRUNCATE public.{pc_table}")
                px.execute_values(cur, f"INSERT INTO public.{patron_table} (patron_id, postal_code, geoid) VALUES %s",
                                  rs_rows, page_size=5000)
            rs.commit()
        finally:
            rs.close()
    try:
        with my.cursor() as cur:
            if a.reset:
                cur.execute("TRUNCATE TABLE strad_bci")
            sql = ("INSERT INTO strad_bci (pcrKey, pcrUserID, pcrMinutesUsed, pcrDateTime, pcrBranch, pcrArea, pcrUserData1) "
                   "VALUES (%s, %s, %s, %s, %s, %s, %s)")
            for part in chunks([tuple(r) for r in rows], 5000):
                cur.executemany(sql, part)
        my.commit()
    finally:
        my.close()
    s.counts["reservations"] = len(rows)
    s.counts["sierra_phrase_rows"] = len(s.phrase)
    s.counts["sierra_patron_rows"] = len(s.patrons)
    took = time.time() - t_begin
    summary = " ".join(f"{k}={v}" for k, v in sorted(s.counts.items()))
    c.log(f"seed: {summary} hash_s={getattr(s, 'hash_seconds', 0):.1f} total_s={took:.1f}"
          f" reset={'yes' if a.reset else 'no'} bcrypt_cost={salt[4:6]}")


if __name__ == "__main__":
    main()
