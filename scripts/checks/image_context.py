#!/usr/bin/env python3
"""Lays out what the Dockerfile's COPY lines take from the build context, without a
container engine, so that cargo can be run on exactly that layout.

    python3 scripts/checks/image_context.py [--dockerfile Dockerfile] [--context DIR] [--stage build] OUT_DIR

Reads the Dockerfile and .dockerignore (Docker's rules: patterns in order, `!` re-includes,
the last pattern that matches a path or one of its parent directories decides, `*` and `?`
do not cross `/`, `**` matches any number of directories). The build context is the
repository's files as a checkout has them (`git ls-files --cached --others
--exclude-standard`; every file under the directory when it is not a git checkout).

For the stage named by --stage it copies each `COPY`/`ADD` source (without `--from`) into
OUT_DIR/root/<destination>, relative to the stage's WORKDIR, with the files' modification
times (so cargo's fingerprints stay valid between runs), and prints the stage's WORKDIR
inside OUT_DIR/root on standard output. For every stage it also checks that:

* each context source exists once .dockerignore is applied (a COPY of an excluded path
  fails in `docker build` the same way);
* each `COPY --from=<stage> SRC` names a path that a RUN line of that stage mentions;
* the last stage ends as a user other than root (`USER` with a non-zero uid).

Exit 0 with the workdir printed; exit 1 with one line per problem on standard error.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


# ----------------------------------------------------------------------- .dockerignore


@dataclass
class IgnorePattern:
    """One .dockerignore line, compiled."""

    text: str
    negated: bool
    regex: re.Pattern[str]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax plus `**`, as Docker's pattern matcher reads it."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    # `**/` matches zero or more whole directories.
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def read_dockerignore(path: Path) -> list[IgnorePattern]:
    patterns: list[IgnorePattern] = []
    if not path.exists():
        return patterns
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        negated = text.startswith("!")
        if negated:
            text = text[1:].strip()
        text = posixpath.normpath(text.lstrip("/")) if text.lstrip("/") else "."
        patterns.append(IgnorePattern(line.strip(), negated, compile_pattern(text)))
    return patterns


def excluded(rel: str, patterns: list[IgnorePattern]) -> bool:
    """True when .dockerignore keeps `rel` (a context-relative file path) out of the context."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in patterns:
        if any(pattern.regex.match(p) for p in prefixes):
            result = not pattern.negated
    return result


# ----------------------------------------------------------------------- build context


def context_files(root: Path) -> list[str]:
    """The files a checkout of this repository has (tracked, plus new files not ignored)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
        # A tracked file deleted in the working tree is not in the context.
        return sorted(n for n in names if (root / n).is_file())
    except (OSError, subprocess.CalledProcessError):
        names = []
        for dirpath, _, files in os.walk(root):
            for f in files:
                names.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
        return sorted(names)


# ----------------------------------------------------------------------- Dockerfile


@dataclass
class Copy:
    """A COPY or ADD instruction."""

    line: int
    flags: dict[str, str]
    sources: list[str]
    dest: str
    workdir: str


@dataclass
class Stage:
    """One FROM ... [AS name] section."""

    index: int
    name: str | None
    workdir: str = "/"
    copies: list[Copy] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    user: str | None = None


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Joins backslash continuations; drops comments and blank lines."""
    lines: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        lines.append((start, buf))
        buf = ""
    if buf:
        lines.append((start, buf))
    return lines


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line, content in logical_lines(text):
        keyword, _, rest = content.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(index=len(stages), name=name))
            continue
        if not stages:
            continue
        stage = stages[-1]
        if keyword == "WORKDIR":
            stage.workdir = posixpath.normpath(posixpath.join(stage.workdir, rest))
        elif keyword == "RUN":
            stage.runs.append(rest)
        elif keyword == "USER":
            stage.user = rest
        elif keyword in ("COPY", "ADD"):
            if rest.startswith("["):
                args = json.loads(rest)
            else:
                args = shlex.split(rest)
            flags = {}
            while args and args[0].startswith("--"):
                name, _, value = args.pop(0)[2:].partition("=")
                flags[name] = value
            if len(args) < 2:
                raise SystemExit(f"Dockerfile:{line}: {keyword} needs a source and a destination")
            if keyword == "ADD" and any(re.match(r"^[a-z]+://", s) for s in args[:-1]):
                raise SystemExit(f"Dockerfile:{line}: ADD of a URL: the image would not be reproducible")
            stage.copies.append(Copy(line, flags, args[:-1], args[-1], stage.workdir))
    return stages


# ----------------------------------------------------------------------- checks and layout


def expand(source: str, files: list[str]) -> list[tuple[str, str]]:
    """(context file, path relative to the copied source) pairs that `source` names."""
    src = posixpath.normpath(source.lstrip("/"))
    if src == ".":
        return [(f, f) for f in files]
    if any(ch in src for ch in "*?["):
        # A pattern names files and directories at its own depth.
        rx = compile_pattern(src)
        depth = src.count("/") + 1
        tops = sorted(
            {
                "/".join(f.split("/")[:depth])
                for f in files
                if f.count("/") + 1 >= depth and rx.match("/".join(f.split("/")[:depth]))
            }
        )
        pairs: list[tuple[str, str]] = []
        for top in tops:
            pairs.extend(expand(top, files))
        return pairs
    if src in files:
        return [(src, posixpath.basename(src))]
    prefix = src + "/"
    inside = [(f, f[len(prefix) :]) for f in files if f.startswith(prefix)]
    return inside


def copy_targets(copy: Copy, files: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(context file, absolute destination) pairs for a COPY, and the problems found."""
    problems = []
    pairs = []
    dest = copy.dest if copy.dest.startswith("/") else posixpath.join(copy.workdir, copy.dest)
    dest_is_dir = copy.dest.endswith("/") or copy.dest in (".", "./") or len(copy.sources) > 1
    for source in copy.sources:
        found = expand(source, files)
        if not found:
            problems.append(
                f"Dockerfile:{copy.line}: COPY {source}: not in the build context "
                "(missing, or excluded by .dockerignore)"
            )
            continue
        single_file = len(found) == 1 and found[0][0] == posixpath.normpath(source.lstrip("/"))
        for file, rel in found:
            if single_file and not dest_is_dir:
                target = dest
            else:
                target = posixpath.join(dest, rel)
            pairs.append((file, posixpath.normpath(target)))
    return pairs, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to lay the stage out in (emptied first)")
    parser.add_argument("--dockerfile", type=Path, default=Path("Dockerfile"))
    parser.add_argument("--context", type=Path, help="the build context (default: the Dockerfile's directory)")
    parser.add_argument("--stage", default="build", help="the stage to lay out (default: build)")
    args = parser.parse_args()

    dockerfile = args.dockerfile.resolve()
    context = (args.context or dockerfile.parent).resolve()
    patterns = read_dockerignore(context / ".dockerignore")
    all_files = context_files(context)
    files = [f for f in all_files if not excluded(f, patterns)]
    stages = parse_dockerfile(dockerfile.read_text())
    if not stages:
        print(f"{dockerfile}: no FROM", file=sys.stderr)
        return 1

    problems: list[str] = []
    by_name = {s.name: s for s in stages if s.name}
    layout: list[tuple[str, str]] = []
    target = by_name.get(args.stage)
    if target is None:
        problems.append(f"Dockerfile: no stage named {args.stage!r}")
    for stage in stages:
        for copy in stage.copies:
            origin = copy.flags.get("from")
            if origin is not None:
                src_stage = by_name.get(origin)
                if src_stage is None:
                    continue  # an image reference, not a stage of this file
                for source in copy.sources:
                    names = {source}
                    if source.startswith(src_stage.workdir.rstrip("/") + "/"):
                        names.add(posixpath.relpath(source, src_stage.workdir))
                    if not any(name in run for run in src_stage.runs for name in names):
                        problems.append(
                            f"Dockerfile:{copy.line}: COPY --from={origin} {source}: "
                            f"no RUN line of stage {origin!r} mentions that path"
                        )
                continue
            pairs, found = copy_targets(copy, files)
            problems.extend(found)
            if stage is target:
                layout.extend(pairs)
    final_user = stages[-1].user
    uid = (final_user or "0").split(":")[0]
    if uid in ("0", "root") or final_user is None:
        problems.append(f"Dockerfile: the last stage runs as {final_user or 'root (no USER)'}: it must not run as root")
    elif not uid.isdigit():
        problems.append(f"Dockerfile: USER {final_user}: use a numeric uid so that a non-root check can verify it")
    if problems:
        for p in problems:
            print(f"image_context: {p}", file=sys.stderr)
        return 1

    root = args.out / "root"
    if root.exists():
        shutil.rmtree(root)
    for file, dest in layout:
        out = root / dest.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(context / file, out)
    print(root / target.workdir.lstrip("/"))
    print(
        f"image_context: {len(layout)} file(s) of {len(all_files)} in the checkout "
        f"({len(files)} after .dockerignore) laid out for stage {args.stage!r}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
