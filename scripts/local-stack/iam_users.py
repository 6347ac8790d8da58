#!/usr/bin/env python3
"""IAM users for the least-privilege tests, on a moto of the tests' own (never real AWS).

    iam_users.py --endpoint URL --policy deploy/iam-policy.json --set NAME=VALUE... [--enforce]

Fills the policy's `<NAME>` placeholders, then creates, in moto's IAM:

* `pcr-full`: exactly the filled policy;
* `pcr-without-<Sid>`: the policy minus that one statement, for every statement;
* `pcr-admin`: everything (the tests read the stream and the bucket with it).

Prints `{"policy": {...}, "full": [key, secret], "admin": [...], "without": {Sid: [...]}}`.
With `--enforce`, moto starts enforcing IAM on every later request
(`POST /moto-api/reset-auth` with `INITIAL_NO_AUTH_ACTION_COUNT` 0).
"""
import argparse
import json
import re
import sys
import urllib.request

import boto3


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--enforce", action="store_true")
    args = ap.parse_args()

    text = open(args.policy, encoding="utf-8").read()
    for item in args.set:
        name, _, value = item.partition("=")
        text = text.replace(f"<{name}>", value)
    left = sorted(set(re.findall(r"<[A-Z_]+>", text)))
    if left:
        print(f"iam_users.py: placeholders left unfilled: {', '.join(left)}", file=sys.stderr)
        return 2
    policy = json.loads(text)

    iam = boto3.client(
        "iam",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def user(name: str, document: dict) -> list:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(document))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return [key["AccessKeyId"], key["SecretAccessKey"]]

    out = {
        "policy": policy,
        "admin": user("pcr-admin", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        "full": user("pcr-full", policy),
        "without": {},
    }
    for statement in policy["Statement"]:
        rest = [s for s in policy["Statement"] if s is not statement]
        out["without"][statement["Sid"]] = user(
            f"pcr-without-{statement['Sid']}", {"Version": policy["Version"], "Statement": rest}
        )
    if args.enforce:
        # Not form-encoded: moto reads the count from the raw body.
        request = urllib.request.Request(
            f"{args.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).read()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
