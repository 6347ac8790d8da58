#!/usr/bin/env python3
"""Tests of scripts/checks/image_context.py: Docker's .dockerignore rules, the COPY layout, and
that the check refuses what `docker build` would refuse (the Dockerfile before the
workspace member was copied, an excluded source, a root user).

    python3 scripts/checks/test_image_context.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image_context as ic  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "checks" / "image_context.py"

# The Dockerfile as it was before crates/bcrypt-lanes was copied (numeric user, so that
# only the missing workspace member is wrong).
BEFORE = """\
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \\
    && cargo build --release --locked \\
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \\
    && strip target/release/pc-reserve-poller

FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/release/pc-reserve-poller /app/pc-reserve-poller
USER 65532:65532
ENTRYPOINT ["/app/pc-reserve-poller"]
"""


def patterns(text: str) -> list[ic.IgnorePattern]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ".dockerignore"
        path.write_text(text)
        return ic.read_dockerignore(path)


def lay_out(dockerfile_text: str, out: Path) -> subprocess.CompletedProcess[str]:
    dockerfile = out / "Dockerfile"
    dockerfile.write_text(dockerfile_text)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dockerfile", str(dockerfile), "--context", str(REPO), str(out / "layout")],
        capture_output=True,
        text=True,
        check=False,
    )


class DockerignoreRules(unittest.TestCase):
    def test_an_allowlist_keeps_only_what_it_names(self) -> None:
        p = patterns("*\n!Cargo.toml\n!src/\n!config/qa.yaml\n")
        self.assertFalse(ic.excluded("Cargo.toml", p))
        self.assertFalse(ic.excluded("src/commands/run.rs", p))
        self.assertFalse(ic.excluded("config/qa.yaml", p))
        self.assertTrue(ic.excluded("config/local.yaml", p))
        self.assertTrue(ic.excluded(".local/salt", p))
        self.assertTrue(ic.excluded("README.md", p))

    def test_the_last_matching_pattern_wins_and_double_star_crosses_directories(self) -> None:
        p = patterns("# comment\n/target\n**/*.jsonl\n!keep/**/*.jsonl\nsrc/*.tmp\n")
        self.assertTrue(ic.excluded("target/debug/x", p))
        self.assertTrue(ic.excluded("out/a/b/would-send.jsonl", p))
        self.assertTrue(ic.excluded("would-send.jsonl", p))
        self.assertFalse(ic.excluded("keep/a/b.jsonl", p))
        self.assertTrue(ic.excluded("src/a.tmp", p))
        # `*` does not cross `/`.
        self.assertFalse(ic.excluded("src/sub/a.tmp", p))


class Layout(unittest.TestCase):
    def test_the_dockerfile_lays_out_both_workspace_members(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            result = subprocess.run(
                [sys.executable, str(SCRIPT), "--dockerfile", str(REPO / "Dockerfile"), d],
                capture_output=True,
                text=True,
                check=False,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            workdir = Path(result.stdout.strip())
            self.assertEqual(workdir, Path(d) / "root" / "src")
            for name in ["Cargo.toml", "Cargo.lock", "src/main.rs", "crates/bcrypt-lanes/Cargo.toml"]:
                self.assertTrue((workdir / name).is_file(), name)
            # Only the build stage is laid out.
            self.assertFalse((Path(d) / "root" / "app").exists())
            # Of the tests, only the harness-less README test that Cargo.toml declares by path.
            self.assertEqual(sorted(p.name for p in (workdir / "tests").iterdir()), ["readme.rs"])

    def test_the_dockerfile_before_the_fix_fails_at_cargo_metadata(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            result = lay_out(BEFORE, Path(d))
            self.assertEqual(result.returncode, 0, result.stderr)
            cargo = subprocess.run(
                ["cargo", "metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"],
                cwd=result.stdout.strip(),
                capture_output=True,
                text=True,
                check=False,
            )
            self.assertNotEqual(cargo.returncode, 0)
            self.assertIn("crates/bcrypt-lanes/Cargo.toml", cargo.stderr)

    def test_an_excluded_source_and_a_root_user_are_refused(self) -> None:
        text = BEFORE.replace("COPY src ./src", "COPY src ./src\nCOPY scripts/test.sh ./").replace(
            "USER 65532:65532", "USER root"
        )
        with tempfile.TemporaryDirectory() as d:
            result = lay_out(text, Path(d))
        self.assertEqual(result.returncode, 1)
        self.assertIn("COPY scripts/test.sh: not in the build context", result.stderr)
        self.assertIn("must not run as root", result.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
