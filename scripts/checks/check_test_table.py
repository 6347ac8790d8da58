#!/usr/bin/env python3
"""Keeps docs/testing.md true: every test its tables name must exist as a test function.

A name is a backticked identifier in a "proved by" cell (`some_test_name`, or a path
such as `config::tests::some_test_name`: its last part is the function). It must be a
`#[test]`/`#[tokio::test]` function somewhere under src/, tests/ or crates/. A backticked
`scripts/...` or `tests/...` path must be a file; `scripts/fault-suite.sh --only NAME`
must name a scenario of tests/fault-suite/fault_suite.py.

Exit 0 when everything named exists, 1 with the missing names otherwise. Run by
scripts/test.sh.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "testing.md")
TEST_FN = re.compile(
    r"#\[(?:tokio::)?test(?:\([^)]*\))?\]\s*(?:#\[[^\]]*\]\s*)*(?:async\s+)?fn\s+([a-z0-9_]+)\s*\("
)
NAME = re.compile(r"^(?:[a-z0-9_]+::)*([a-z][a-z0-9_]*_[a-z0-9_]+)$")


def test_functions():
    names = set()
    for top in ("src", "tests", "crates", "benches"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            if "/target" in dirpath:
                continue
            for f in files:
                if f.endswith(".rs"):
                    with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                        names.update(TEST_FN.findall(fh.read()))
    return names


def proved_by_cells(text):
    """The last cell of every table row whose header's last column is 'proved by'."""
    cells, in_table = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if not in_table:
            in_table = parts[-1].lower() == "proved by"
            continue
        if set(line.replace("|", "").strip()) <= {"-", " "}:
            continue
        cells.append((parts[0], parts[-1]))
    return cells


def main():
    with open(DOC, encoding="utf-8") as fh:
        text = fh.read()
    tests = test_functions()
    with open(os.path.join(ROOT, "tests", "fault-suite", "fault_suite.py"), encoding="utf-8") as fh:
        # The scenarios `--only` selects: `if "NAME" in only:` in its main().
        scenarios = set(re.findall(r'if "(\w+)" in only:', fh.read()))
    rows = proved_by_cells(text)
    if not rows:
        print("check_test_table: docs/testing.md has no table with a 'proved by' column", file=sys.stderr)
        return 1
    missing, named = [], 0
    for what, cell in rows:
        tokens = re.findall(r"`([^`]+)`", cell)
        if not tokens:
            missing.append(f"{what}: names no test")
        for tok in tokens:
            if tok.startswith(("scripts/", "tests/", "src/", "fuzz/")):
                path = tok.split()[0]
                named += 1
                if not os.path.exists(os.path.join(ROOT, path)):
                    missing.append(f"{what}: no file {path}")
                m = re.search(r"--only (\w+)", tok)
                if m and m.group(1) not in scenarios:
                    missing.append(f"{what}: no fault scenario {m.group(1)}")
                continue
            m = NAME.match(tok)
            if not m:
                continue
            named += 1
            if m.group(1) not in tests:
                missing.append(f"{what}: no test fn {m.group(1)}")
    if missing:
        print("check_test_table: docs/testing.md names tests that do not exist:", file=sys.stderr)
        for m in missing:
            print(f"  {m}", file=sys.stderr)
        return 1
    print(f"check_test_table: {len(rows)} rows, {named} tests and scripts named, all exist", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
