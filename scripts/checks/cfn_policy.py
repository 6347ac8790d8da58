#!/usr/bin/env python3
"""deploy/iam-policy.json is the task role's policy; deploy/pc-reserve-poller-stack.yaml
carries the same statements. This renders them into the template, so there is one source:

    scripts/checks/cfn_policy.py --write    rewrite the template's generated sections
    scripts/checks/cfn_policy.py --check    exit 1 when they differ from iam-policy.json
                                            (scripts/checks/lint-deploy.sh runs it)
    scripts/checks/cfn_policy.py --print    the policy as CloudFormation renders it (JSON),
                                            for an account, region and parameters given
                                            as NAME=VALUE (used by test_switch_over.py)

Two sections are generated, each between a `# BEGIN cfn_policy.py <name>` and an
`# END cfn_policy.py <name>` line: `parameters` (one template parameter per `<PLACEHOLDER>`
of iam-policy.json, `<CURSOR_KEY>` -> `CursorKey`) and `statements` (the policy document,
every string with a placeholder as `!Sub`, `<REGION>` and `<ACCOUNT_ID>` as the stack's own
`${AWS::Region}` and `${AWS::AccountId}`). Whatever statements iam-policy.json holds, the
template follows; nothing else in the template is touched. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "deploy" / "iam-policy.json"
TEMPLATE = REPO / "deploy" / "pc-reserve-poller-stack.yaml"

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
PSEUDO = {"REGION": "AWS::Region", "ACCOUNT_ID": "AWS::AccountId", "PARTITION": "AWS::Partition"}

# What each known placeholder is, for the parameter's description and default; any other
# placeholder still gets a parameter (described by its name, no default).
KNOWN = {
    "CONFIG_KMS_KEY_ID": ("The id of the KMS key of the configuration's ENCRYPTED_VARIABLES", None),
    "CURSOR_BUCKET": ("S3_BUCKET: the bucket of the cursor and lease objects", None),
    "CURSOR_KEY": ("S3_RESOURCE: the cursor object's key", "pc_reserve_poller_state.json"),
    "CURSOR_KEY_STEM": ("S3_RESOURCE without .json (the backfill cursors' prefix)", "pc_reserve_poller_state"),
    "LEASE_KEY": ("LEASE_RESOURCE: the lease object's key", "pc_reserve_poller_state.json.lease"),
    "STREAM_NAME": ("The name of the Kinesis stream of KINESIS_STREAM_ARN", None),
}


def parameter_name(placeholder: str) -> str:
    return "".join(part.capitalize() for part in placeholder.split("_"))


def placeholders(policy) -> list[str]:
    found: list[str] = []
    for name in PLACEHOLDER.findall(json.dumps(policy)):
        if name not in PSEUDO and name not in found:
            found.append(name)
    return found


def sub(text: str) -> str:
    """`<X>` -> `${Param}` (or the pseudo parameter)."""
    return PLACEHOLDER.sub(lambda m: "${" + PSEUDO.get(m.group(1), parameter_name(m.group(1))) + "}", text)


def with_subs(value):
    """The policy with every placeholder in CloudFormation's `${...}` form."""
    if isinstance(value, dict):
        return {k: with_subs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_subs(v) for v in value]
    if isinstance(value, str):
        return value if not PLACEHOLDER.search(value) else _Sub(sub(value))
    return value


class _Sub(str):
    """A string rendered as `!Sub "..."`."""


def _scalar(value) -> str:
    if isinstance(value, _Sub):
        return f"!Sub {json.dumps(str(value))}"
    return json.dumps(value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key) else json.dumps(key)


def _block(value, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_key(key)}:")
                lines += _block(item, indent + 2)
            else:
                lines.append(f"{pad}{_key(key)}: {_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = _block(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines += inner[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def render_parameters(policy, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for name in placeholders(policy):
        description, default = KNOWN.get(name, (f"Replaces <{name}> in deploy/iam-policy.json", None))
        lines.append(f"{pad}{parameter_name(name)}:")
        lines.append(f"{pad}  Type: String")
        lines.append(f"{pad}  MinLength: 1")
        if default is not None:
            lines.append(f"{pad}  Default: {json.dumps(default)}")
        lines.append(f"{pad}  Description: {json.dumps(description + f' (<{name}> in deploy/iam-policy.json)')}")
    return lines


def render_statements(policy, indent: int) -> list[str]:
    return _block(with_subs(policy), indent)


SECTIONS = {"parameters": render_parameters, "statements": render_statements}


def rewrite(template: str, policy) -> str:
    out: list[str] = []
    lines = template.splitlines()
    i = 0
    seen = set()
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)# BEGIN cfn_policy\.py (\w+)", line)
        if not m:
            out.append(line)
            i += 1
            continue
        indent, section = len(m.group(1)), m.group(2)
        if section not in SECTIONS:
            raise SystemExit(f"cfn_policy: unknown section {section!r} in {TEMPLATE.relative_to(REPO)}")
        end = next(
            (j for j in range(i + 1, len(lines)) if re.match(rf"^\s*# END cfn_policy\.py {section}\b", lines[j])),
            None,
        )
        if end is None:
            raise SystemExit(f"cfn_policy: no END line for section {section!r}")
        out.append(line)
        out += SECTIONS[section](policy, indent)
        out.append(lines[end])
        seen.add(section)
        i = end + 1
    missing = set(SECTIONS) - seen
    if missing:
        raise SystemExit(f"cfn_policy: {TEMPLATE.relative_to(REPO)} lacks the section(s) {sorted(missing)}")
    return "\n".join(out) + "\n"


def resolved(policy, account: str, region: str, values: dict[str, str]):
    """The policy with its placeholders filled in, as CloudFormation creates it."""
    fill = {"REGION": region, "ACCOUNT_ID": account, "PARTITION": "aws", **values}

    def one(m: re.Match) -> str:
        if m.group(1) not in fill:
            raise SystemExit(f"cfn_policy: no value for <{m.group(1)}>")
        return fill[m.group(1)]

    return json.loads(PLACEHOLDER.sub(one, json.dumps(policy)))


def main(argv: list[str]) -> int:
    policy = json.loads(POLICY.read_text())
    if argv[:1] == ["--print"]:
        args = dict(a.split("=", 1) for a in argv[1:])
        account, region = args.pop("ACCOUNT_ID"), args.pop("REGION")
        print(json.dumps(resolved(policy, account, region, args), indent=2))
        return 0
    template = TEMPLATE.read_text()
    want = rewrite(template, policy)
    if argv == ["--write"]:
        if want != template:
            TEMPLATE.write_text(want)
            print(f"cfn_policy: rewrote {TEMPLATE.relative_to(REPO)} from {POLICY.relative_to(REPO)}", file=sys.stderr)
        return 0
    if argv == ["--check"]:
        if want != template:
            print(
                f"cfn_policy: {TEMPLATE.relative_to(REPO)} does not carry {POLICY.relative_to(REPO)}'s statements; "
                "run scripts/checks/cfn_policy.py --write",
                file=sys.stderr,
            )
            return 1
        print(f"cfn_policy: {TEMPLATE.relative_to(REPO)} carries {POLICY.relative_to(REPO)}'s statements", file=sys.stderr)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
