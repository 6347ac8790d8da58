#!/usr/bin/env python3
"""moto's server (the local S3, Kinesis and KMS), made to answer like the real services.

1. Kinesis sequence numbers in constant time. moto 5 finds a shard's last sequence number
   by copying every key of the shard into a list, once per record put
   (`Shard.get_max_sequence_number`), so each PutRecords costs time in proportion to the
   records already on the stream: a 10,000-record run spent about 30% of the emulator's CPU
   there, and 100,000 record runs were bound by it. Real Kinesis has no such cost. The fix
   reads the last key of the (ordered) dict directly; sequence numbers, order and every
   answer stay the same.

2. A missing key is 403 to a caller without s3:ListBucket. Real S3 answers a GET or HEAD of
   a key that does not exist with 404 NoSuchKey only when the caller may list the bucket;
   otherwise with 403 AccessDenied
   (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html, "Permissions";
   https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html). moto always answers
   404. Here, when moto enforces IAM (`INITIAL_NO_AUTH_ACTION_COUNT` requests have passed),
   "may list" is moto's own policy evaluation of `s3:ListBucket` on `arn:aws:s3:::<bucket>`
   for the caller's access key; when it does not, the access key ids in
   `PCR_MOTO_WITHOUT_LISTBUCKET` (comma-separated; default `AKIAPCRWITHOUTLIST01`) lack it
   and every other key has it.

3. Lost responses, on request. Real S3 can commit a write and still fail to deliver the
   answer (a 500, a 503, a timeout); the SDK then retries the same request, which now meets
   its own write (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html).
   With a rule on, a PUT or DELETE of an object in a matching bucket is committed by moto
   and then, at the rule's rate, answered `500 InternalError` instead of moto's answer.
   Rules come from `PCR_MOTO_LOST_RESPONSES` (`<bucket regex>=<rate>[,...]`, seed in
   `PCR_MOTO_LOST_RESPONSES_SEED`, else random) or at run time from the control endpoint
   `POST /_pcr/lost-responses` with JSON `{"bucket": "<regex>", "rate": 0.5, "seed": 7,
   "key": "<optional key regex>"}` (rate 0 removes the rule); `GET /_pcr/lost-responses`
   lists the rules and how many answers each lost. Every seed is printed on standard error.

4. IAM for KMS and Kinesis. moto authorises KMS and Kinesis calls against the resource
   `*`, so a policy scoped to a key or stream ARN (as real IAM policies are) would never
   match. The key ARN (from `KeyId` or, for Decrypt, from the ciphertext) and the stream
   ARN (`StreamARN` or `StreamName`) are given to moto's evaluation instead. And moto
   refuses them with its XML error and HTTP 403, where the real services answer 400 with
   JSON `{"__type": "AccessDeniedException", "message": ...}`
   (https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html): the wrapper
   answers like them.

5. Faults and a request log, on request (for the tests that count attempts or need a
   request in flight). `POST /_pcr/faults` with JSON `{"service": "kinesis", "scope":
   "<stream name or ARN regex>", "operation": "PutRecords", "status": 500, "count": 3,
   "delay_ms": 0}` answers the next `count` matching calls with that status and the body
   the real service sends for it (Kinesis: 500 `InternalFailure`, 503
   `ServiceUnavailable`, as JSON `{"__type": ..., "message": ...}`,
   https://docs.aws.amazon.com/kinesis/latest/APIReference/CommonErrors.html) without
   running them; `delay_ms` holds every matching answer that long (after the call ran, so a
   read still returns what was there when it arrived). For S3 the rule is `{"service":
   "s3", "scope": "<bucket regex>", "key": "<key regex>", "operation": "GET"}` (the HTTP
   method), and the status answers carry S3's XML error. A rule with neither a status nor a
   delay removes the rule of that service and scope. `GET /_pcr/requests?scope=<name>`
   lists every S3 object request of that bucket and every Kinesis call of that stream (ARN or
   name containing it) since the server started: operation, key, status, whether it was
   conditional (`if_match`, `if_none_match`), and the `start` and `end` times (Unix seconds; `end` is null while it is in flight).
   Conditional S3 writes (`If-Match`, `If-None-Match`) are serialised, as S3 makes them
   atomic (moto checks the condition and writes without a lock).

6. EventBridge `TestEventPattern` and CloudWatch Logs `TestMetricFilter`, which moto does
   not implement (the first answers nothing, the second 500), answered as the real services
   do, so the runbook's checks of the alarm stack run here
   (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_TestEventPattern.html,
   https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_TestMetricFilter.html).
   Event patterns: exact values, `prefix`, `suffix`, `anything-but` (a value, a list, or
   `prefix`), `exists`, `numeric`; an array in the event matches when one element does,
   an array of objects when one object does, and a matcher other than `exists: false`
   never matches a missing field
   (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html).
   Filter patterns: terms (moto's own), space-delimited `[a, b = "X", ...]` (fields split
   at spaces, `"..."` and `[...]` one field each, `=`/`!=` with `*` wildcards, numeric
   comparisons, `...` for any number of fields) and JSON `{ $.a.b = "X" }` with `=`, `!=`,
   numeric comparisons, `&&` and `||`
   (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/FilterAndPatternSyntax.html);
   anything else is refused with 400 InvalidParameterException rather than guessed.

7. ECS `RunTask` of a task definition whose containers name no memory of their own. On
   Fargate the task-level `memory` is enough and the container-level `memory` and
   `memoryReservation` are optional
   (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_definition_parameters.html#container_definition_memory);
   moto adds `None` to its resource count and answers 500. A container without either now
   counts 0, as one that names neither on Fargate takes its share of the task's. And the
   task's network interface (awsvpc) has a private DNS name
   (`ip-<address>.<region>.compute.internal`, `ec2.internal` in us-east-1) whether or not
   the VPC enables DNS hostnames, as EC2 reports one for every interface
   (https://docs.aws.amazon.com/vpc/latest/userguide/vpc-dns.html#vpc-dns-hostnames);
   moto has none unless the VPC enables them, and its RunTask then answers 500.

8. ECR image digests. ECR names an image by the SHA-256 of its manifest as pushed
   (https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-retag.html: the digest
   of `put-image` with the manifest of `batch-get-image` is the original's); moto hashes
   the layers' digests (a manifest without layers gets a random one), so two images could
   share a digest. The digest is the manifest's hash here.

9. Decrypt with a `KeyId` that is not the ciphertext's key. Real KMS answers 400
   `IncorrectKeyException` ("The key ID in the request does not identify a KMS key that can
   perform this operation": https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html,
   "KeyId" and "Errors"); moto 5.2.5 checks the key too but answers AccessDeniedException.
   The wrapper answers like KMS.

Arguments are moto_server's own (`-H 127.0.0.1 -p 5055`), plus `--exit-with-parent`: stop
when the process that started this one exits (tests start a server of their own with it).
"""
import base64
import collections
import io
import json
import os
import random
import re
import sys
import threading
import time
from urllib.parse import parse_qs, unquote

from moto.kinesis import models


def _min_sequence_number(self) -> int:
    return next(iter(self.records), 0)


def _max_sequence_number(self) -> int:
    return next(reversed(self.records), 0)


models.Shard.get_min_sequence_number = _min_sequence_number
models.Shard.get_max_sequence_number = _max_sequence_number

from types import SimpleNamespace  # noqa: E402

from moto.ecs import models as ecs_models  # noqa: E402

_MEMORY_KEYS = ("memory", "memoryReservation", "Memory", "MemoryReservation")
_task_resources = ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements


def _task_resource_requirements(task_definition):
    containers = [
        c if any(c.get(k) is not None for k in _MEMORY_KEYS) else {**c, "memory": 0}
        for c in task_definition.container_definitions
    ]
    return _task_resources(SimpleNamespace(container_definitions=containers))


ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(_task_resource_requirements)

from moto.ec2.models.elastic_network_interfaces import NetworkInterface  # noqa: E402
from moto.ec2.utils import generate_dns_from_ip  # noqa: E402


def _eni_dns_name(self) -> str:
    return self.__dict__.get("_pcr_private_dns_name") or generate_dns_from_ip(self.private_ip_address)


def _set_eni_dns_name(self, value: str) -> None:
    self.__dict__["_pcr_private_dns_name"] = value


NetworkInterface.private_dns_name = property(_eni_dns_name, _set_eni_dns_name)

import hashlib  # noqa: E402

from moto.ecr import models as ecr_models  # noqa: E402


def _ecr_image_digest(self) -> None:
    manifest = self.image_manifest if isinstance(self.image_manifest, bytes) else self.image_manifest.encode("utf-8")
    self._image_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()


ecr_models.Image._create_digest = _ecr_image_digest

from moto import settings  # noqa: E402  (after the patch, as the server imports models)
from moto.core.authorization import ActionAuthenticatorMixin  # noqa: E402
from moto.kinesis.responses import KinesisResponse  # noqa: E402
from moto.core.exceptions import JsonRESTError  # noqa: E402
from moto.kms.models import KmsBackend  # noqa: E402
from moto.kms.responses import KmsResponse  # noqa: E402
from moto.kms.utils import _deserialize_ciphertext_blob  # noqa: E402
from moto.moto_server.werkzeug_app import DomainDispatcherApplication  # noqa: E402
from moto.server import main  # noqa: E402

WITHOUT_LISTBUCKET = {
    k.strip()
    for k in os.environ.get("PCR_MOTO_WITHOUT_LISTBUCKET", "AKIAPCRWITHOUTLIST01").split(",")
    if k.strip()
}

# Sub-resources whose GET/HEAD is not a read of the object itself.
_NOT_OBJECT_READS = {"uploadId", "uploads", "acl", "tagging", "attributes", "legal-hold", "retention", "torrent"}


def log(message: str) -> None:
    print(f"moto_server.py: {message}", file=sys.stderr, flush=True)


# --- 4. resources for KMS and Kinesis -------------------------------------------------------


def _json_body(response) -> dict:
    try:
        body = json.loads(response.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _kms_resource(self) -> str:
    body = _json_body(self)
    key = body.get("KeyId")
    if not key and body.get("CiphertextBlob"):
        try:
            blob = base64.b64decode(body["CiphertextBlob"])
            key = _deserialize_ciphertext_blob(blob).key_id
            key = key.decode("utf-8") if isinstance(key, bytes) else key
        except Exception:  # not a moto ciphertext: moto's own answer follows
            return "*"
    if not key:
        return "*"
    if key.startswith("arn:"):
        return key
    if key.startswith("alias/"):
        return f"arn:aws:kms:{self.region}:{self.current_account}:{key}"
    return f"arn:aws:kms:{self.region}:{self.current_account}:key/{key}"


def _kinesis_resource(self) -> str:
    body = _json_body(self)
    if body.get("StreamARN"):
        return body["StreamARN"]
    if body.get("StreamName"):
        return f"arn:aws:kinesis:{self.region}:{self.current_account}:stream/{body['StreamName']}"
    return "*"


KmsResponse._determine_resource = _kms_resource
KinesisResponse._determine_resource = _kinesis_resource


# --- 9. Decrypt under another key ------------------------------------------------------------


class IncorrectKeyException(JsonRESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__(
            "IncorrectKeyException",
            "The key ID in the request does not identify a KMS key that can perform this operation.",
        )


_original_decrypt = KmsBackend.decrypt


def _decrypt(self, ciphertext_blob, encryption_context, key_id=None):
    plaintext, arn = _original_decrypt(self, ciphertext_blob, encryption_context, key_id=None)
    if key_id is not None and self.any_id_to_key_id(key_id) != arn.rsplit("/", 1)[-1]:
        raise IncorrectKeyException()
    return plaintext, arn


KmsBackend.decrypt = _decrypt


# --- 2. who may list a bucket ---------------------------------------------------------------


def _iam_enforced() -> bool:
    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


def _access_key_id(environ) -> str | None:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=([^/,\s]+)/", auth)
    if m:
        return m.group(1)
    qs = parse_qs(environ.get("QUERY_STRING", ""))
    cred = qs.get("X-Amz-Credential", [""])[0]
    return cred.split("/")[0] or None


def _may_list_bucket(environ, bucket: str) -> bool:
    key_id = _access_key_id(environ)
    if not _iam_enforced():
        return key_id not in WITHOUT_LISTBUCKET
    from moto.iam.access_control import (
        CreateAccessKeyFailure,
        IAMPolicy,
        PermissionResult,
        create_access_key,
    )
    from moto.iam.models import get_account_id_from

    if not key_id:
        return False
    try:
        access_key = create_access_key(
            account_id=get_account_id_from(key_id),
            partition="aws",
            access_key_id=key_id,
            headers={k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")},
        )
    except CreateAccessKeyFailure:
        return False
    permitted = False
    for policy in access_key.collect_policies():
        result = IAMPolicy(policy).is_action_permitted("s3:ListBucket", f"arn:aws:s3:::{bucket}")
        if result == PermissionResult.DENIED:
            return False
        permitted = permitted or result == PermissionResult.PERMITTED
    return permitted


def _bucket_exists(bucket: str) -> bool:
    from moto.s3.models import s3_backends

    for account in list(s3_backends.values()):
        if bucket in account["global"].buckets:
            return True
    return False


ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>PCRMOTO403</RequestId></Error>"
)
INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>PCRMOTO500</RequestId></Error>"
)


# --- 3. lost responses ----------------------------------------------------------------------


class LostResponses:
    """Rules: bucket regex -> (rate, key regex, seeded generator, count)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: dict[str, dict] = {}

    def set(self, bucket: str, rate: float, seed: int | None, key: str | None) -> dict:
        with self.lock:
            if rate <= 0:
                self.rules.pop(bucket, None)
                log(f"lost responses off for buckets matching {bucket!r}")
                return {"bucket": bucket, "rate": 0}
            seed = int(seed) if seed is not None else random.SystemRandom().randrange(2**32)
            rule = {
                "bucket": bucket,
                "rate": float(rate),
                "seed": seed,
                "key": key,
                "lost": 0,
                "rng": random.Random(seed),
            }
            self.rules[bucket] = rule
            log(f"lost responses on: buckets matching {bucket!r}, keys matching {key!r}, rate {rate}, seed {seed}")
            return self.public(rule)

    @staticmethod
    def public(rule: dict) -> dict:
        return {k: v for k, v in rule.items() if k != "rng"}

    def list(self) -> list:
        with self.lock:
            return [self.public(r) for r in self.rules.values()]

    def pick(self, bucket: str, key: str) -> dict | None:
        """The rule that loses this answer, if any (draws from the rule's generator)."""
        with self.lock:
            for rule in self.rules.values():
                if re.fullmatch(rule["bucket"], bucket) and (
                    rule["key"] is None or re.search(rule["key"], key)
                ):
                    if rule["rng"].random() < rule["rate"]:
                        return rule
                    return None
        return None


LOST = LostResponses()
for spec in filter(None, (s.strip() for s in os.environ.get("PCR_MOTO_LOST_RESPONSES", "").split(","))):
    pattern, _, rate = spec.rpartition("=")
    seed = os.environ.get("PCR_MOTO_LOST_RESPONSES_SEED")
    LOST.set(pattern, float(rate), int(seed) if seed else None, None)


def _control(environ, start_response):
    method = environ["REQUEST_METHOD"]
    if method == "POST":
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(size) or b"{}")
            answer = LOST.set(str(body["bucket"]), float(body.get("rate", 0)), body.get("seed"), body.get("key"))
        except (KeyError, ValueError, TypeError) as e:
            start_response("400 Bad Request", [("Content-Type", "application/json")])
            return [json.dumps({"error": str(e)}).encode()]
    else:
        answer = LOST.list()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


# --- 6. TestEventPattern and TestMetricFilter -----------------------------------------------

_MISSING = object()


def _pattern_value_matches(matcher, value) -> bool:
    """One element of a pattern's array against one (non-array) event value."""
    if not isinstance(matcher, dict):
        if value is _MISSING:
            return False
        if isinstance(matcher, bool) or isinstance(value, bool):
            return matcher is value
        if isinstance(matcher, (int, float)) and isinstance(value, (int, float)):
            return matcher == value
        return type(matcher) is type(value) and matcher == value
    (op, arg), = matcher.items()
    if op == "exists":
        return (value is not _MISSING) == bool(arg)
    if value is _MISSING:
        return False
    if op == "prefix":
        return isinstance(value, str) and value.startswith(arg)
    if op == "suffix":
        return isinstance(value, str) and value.endswith(arg)
    if op == "anything-but":
        if isinstance(arg, dict):
            return not _pattern_value_matches(arg, value)
        values = arg if isinstance(arg, list) else [arg]
        return not any(_pattern_value_matches(v, value) for v in values)
    if op == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        checks = {"<": value.__lt__, "<=": value.__le__, "=": value.__eq__, ">": value.__gt__, ">=": value.__ge__}
        return all(checks[arg[i]](arg[i + 1]) for i in range(0, len(arg), 2))
    raise ValueError(f"unsupported matcher {op!r}")


def _event_matches(pattern: dict, event) -> bool:
    if isinstance(event, list):
        return any(_event_matches(pattern, e) for e in event if isinstance(e, dict))
    if not isinstance(event, dict):
        return False
    for key, sub in pattern.items():
        value = event.get(key, _MISSING)
        if isinstance(sub, dict):
            if value is _MISSING or not _event_matches(sub, value):
                return False
            continue
        if not isinstance(sub, list):
            raise ValueError(f"the value of {key!r} must be an array or an object")
        values = value if isinstance(value, list) else [value]
        if not values:
            values = [_MISSING]
        if not any(_pattern_value_matches(m, v) for m in sub for v in values):
            return False
    return True


_EVENT_REQUIRED = ("id", "account", "source", "time", "region", "resources", "detail-type")


def _test_event_pattern(body: dict) -> tuple[str, dict]:
    try:
        pattern = json.loads(body.get("EventPattern", ""))
        event = json.loads(body.get("Event", ""))
    except ValueError as e:
        return "400 Bad Request", {"__type": "InvalidEventPatternException", "message": f"not JSON: {e}"}
    missing = [f for f in _EVENT_REQUIRED if f not in event]
    if missing:
        return "400 Bad Request", {
            "__type": "InvalidEventPatternException",
            "message": f"Event is missing required fields: {', '.join(missing)}",
        }
    try:
        return "200 OK", {"Result": _event_matches(pattern, event)}
    except (ValueError, TypeError, AttributeError) as e:
        return "400 Bad Request", {"__type": "InvalidEventPatternException", "message": str(e)}


def _split_fields(message: str) -> list[str]:
    fields, i = [], 0
    while i < len(message):
        if message[i].isspace():
            i += 1
            continue
        close = {'"': '"', "[": "]"}.get(message[i])
        if close:
            end = message.find(close, i + 1)
            end = len(message) if end < 0 else end
            fields.append(message[i + 1 : end])
            i = end + 1
            continue
        end = i
        while end < len(message) and not message[end].isspace():
            end += 1
        fields.append(message[i:end])
        i = end
    return fields


_COMPARISON = re.compile(r"^\s*([\w$.\[\]]+)\s*(=|!=|<=|>=|<|>)\s*(.+?)\s*$")


def _compare(actual, op: str, expected: str) -> bool:
    if actual is _MISSING or actual is None:
        return False
    expected = expected.strip()
    if expected.startswith('"') and expected.endswith('"') and len(expected) >= 2:
        expected, numeric = expected[1:-1], False
    else:
        try:
            number = float(expected)
            numeric = True
        except ValueError:
            numeric = False
    if numeric:
        try:
            value = float(actual)
        except (TypeError, ValueError):
            return op == "!="
        return {"=": value == number, "!=": value != number, "<": value < number, "<=": value <= number,
                ">": value > number, ">=": value >= number}[op]
    if op not in ("=", "!="):
        raise ValueError(f"{op} needs a number")
    text = actual if isinstance(actual, str) else json.dumps(actual)
    found = re.fullmatch(".*".join(re.escape(part) for part in expected.split("*")), text) is not None
    return found if op == "=" else not found


def _space_delimited(pattern: str, message: str):
    specs = [p.strip() for p in pattern.strip()[1:-1].split(",")]
    fields = _split_fields(message)
    extracted: dict[str, str] = {}
    i = 0
    for n, spec in enumerate(specs, 1):
        if spec == "...":
            if n != len(specs):
                raise ValueError("'...' is supported only as the last field")
            return extracted
        if i >= len(fields):
            return None
        m = _COMPARISON.match(spec)
        name = m.group(1) if m else spec
        if not re.fullmatch(r"\w+", name):
            raise ValueError(f"unsupported field {spec!r}")
        if m and not _compare(fields[i], m.group(2), m.group(3)):
            return None
        extracted[f"${name}"] = fields[i]
        i += 1
    return extracted if i == len(fields) else None


def _json_path(document, path: str):
    value = document
    for part in re.findall(r"\.([\w-]+)|\[(\d+)\]", path[1:]):
        key, index = part
        if key and isinstance(value, dict) and key in value:
            value = value[key]
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return _MISSING
    return value


def _json_pattern(pattern: str, message: str):
    try:
        document = json.loads(message)
    except ValueError:
        return None
    body = pattern.strip()[1:-1]
    def one(clause: str) -> bool:
        m = _COMPARISON.match(clause.strip().strip("()"))
        if not m or not m.group(1).startswith("$."):
            raise ValueError(f"unsupported JSON condition {clause.strip()!r}")
        return _compare(_json_path(document, m.group(1)), m.group(2), m.group(3))
    if "&&" in body and "||" in body:
        raise ValueError("mixing && and || is not supported here")
    if "||" in body:
        return {} if any(one(c) for c in body.split("||")) else None
    return {} if all(one(c) for c in body.split("&&")) else None


def _test_metric_filter(body: dict) -> tuple[str, dict]:
    from moto.logs.utils import EventMessageFilter, UnsupportedFilterPattern

    pattern = body.get("filterPattern", "")
    matches = []
    try:
        for n, message in enumerate(body.get("logEventMessages") or [], 1):
            stripped = pattern.strip()
            if stripped.startswith("[") and stripped.endswith("]"):
                extracted = _space_delimited(stripped, message)
            elif stripped.startswith("{") and stripped.endswith("}"):
                extracted = _json_pattern(stripped, message)
            else:
                term = EventMessageFilter(stripped)
                if isinstance(term.filter_type, UnsupportedFilterPattern):
                    raise ValueError(f"unsupported filter pattern {pattern!r}")
                extracted = {} if term.matches(message) else None
            if extracted is not None:
                matches.append({"eventNumber": n, "eventMessage": message, "extractedValues": extracted})
    except ValueError as e:
        return "400 Bad Request", {"__type": "InvalidParameterException", "message": f"Invalid metric filter pattern: {e}"}
    return "200 OK", {"matches": matches}


_NOT_IN_MOTO = {
    "AWSEvents.TestEventPattern": _test_event_pattern,
    "Logs_20140328.TestMetricFilter": _test_metric_filter,
}


def _not_in_moto(environ, start_response, handler):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
    except ValueError:
        body = {}
    status, answer = handler(body if isinstance(body, dict) else {})
    return _answer(start_response, status, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(answer).encode())


# --- 5. faults and the request log ----------------------------------------------------------

KINESIS_ERRORS = {
    500: ("InternalFailure", "The request processing has failed because of an unknown error, exception or failure."),
    503: ("ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
}
S3_ERRORS = {500: "InternalError", 503: "SlowDown"}


class Faults:
    """Rules: (service, scope regex) -> operation, key regex, status, count, delay, answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: dict[tuple, dict] = {}
        self.requests: collections.deque = collections.deque(maxlen=100_000)
        self.conditional = threading.Lock()

    def set(self, body: dict) -> dict:
        service = str(body["service"])
        if service not in ("s3", "kinesis"):
            raise ValueError("service must be s3 or kinesis")
        scope = str(body["scope"])
        status = int(body["status"]) if body.get("status") is not None else None
        delay_ms = int(body.get("delay_ms") or 0)
        with self.lock:
            if status is None and delay_ms <= 0:
                self.rules.pop((service, scope), None)
                log(f"faults off for {service} {scope!r}")
                return {"service": service, "scope": scope, "removed": True}
            rule = {
                "service": service,
                "scope": scope,
                "operation": body.get("operation"),
                "key": body.get("key"),
                "status": status,
                "count": int(body["count"]) if body.get("count") is not None else None,
                "delay_ms": delay_ms,
                "answered": 0,
            }
            self.rules[(service, scope)] = rule
            log(f"faults on: {rule}")
            return dict(rule)

    def pick(self, service: str, name: str, operation: str, key: str | None) -> tuple[int | None, float]:
        """(status to answer instead, seconds to hold the answer) for this call."""
        with self.lock:
            for rule in self.rules.values():
                if rule["service"] != service or not re.search(rule["scope"], name):
                    continue
                if rule["operation"] and rule["operation"] != operation:
                    continue
                if rule["key"] and not (key and re.search(rule["key"], key)):
                    continue
                status = None
                if rule["status"] is not None and (rule["count"] is None or rule["count"] > 0):
                    status = rule["status"]
                    if rule["count"] is not None:
                        rule["count"] -= 1
                    rule["answered"] += 1
                return status, rule["delay_ms"] / 1000.0
        return None, 0.0

    def started(self, entry: dict) -> dict:
        entry["start"] = time.time()
        entry["end"] = None
        entry["status"] = None
        with self.lock:
            self.requests.append(entry)
        return entry

    def list(self, scope: str) -> list:
        with self.lock:
            return [dict(e) for e in self.requests if scope and scope in e["name"]]


FAULTS = Faults()


def _faults_control(environ, start_response):
    method = environ["REQUEST_METHOD"]
    try:
        if method == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            answer = FAULTS.set(json.loads(environ["wsgi.input"].read(size) or b"{}"))
        else:
            answer = [dict(r) for r in FAULTS.rules.values()]
    except (KeyError, ValueError, TypeError) as e:
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [json.dumps({"error": str(e)}).encode()]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]


def _requests_control(environ, start_response):
    scope = parse_qs(environ.get("QUERY_STRING", "")).get("scope", [""])[0]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(FAULTS.list(scope)).encode()]


def _kinesis_call(environ) -> tuple[str, str] | None:
    """`(operation, stream)` of a Kinesis call (the body is read and put back)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if not target.startswith("Kinesis_"):
        return None
    size = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(size) if size else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {}
    stream = (body.get("StreamARN") or body.get("StreamName") or "") if isinstance(body, dict) else ""
    return target.split(".", 1)[-1], stream


def _with_faults(app, environ, start_response, service, name, operation, key):
    """Runs the call under the faults of 5 and logs it."""
    entry = FAULTS.started(
        {
            "service": service,
            "name": name,
            "operation": operation,
            "key": key,
            "if_match": bool(environ.get("HTTP_IF_MATCH")),
            "if_none_match": bool(environ.get("HTTP_IF_NONE_MATCH")),
        }
    )
    status, delay = FAULTS.pick(service, name, operation, key)
    try:
        if status is not None:
            if service == "kinesis":
                code, message = KINESIS_ERRORS.get(status, ("InternalFailure", "Injected failure."))
                body = json.dumps({"__type": code, "message": message}).encode()
                headers = [("Content-Type", "application/x-amz-json-1.1")]
            else:
                code = S3_ERRORS.get(status, "InternalError")
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>Injected failure.</Message><RequestId>PCRMOTOFAULT</RequestId></Error>"
                ).encode()
                headers = [("Content-Type", "application/xml")]
            reason = {500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
            if delay:
                time.sleep(delay)
            entry["status"] = status
            return _answer(start_response, f"{status} {reason}", headers, body)
        conditional = service == "s3" and operation in ("PUT", "DELETE") and (
            environ.get("HTTP_IF_MATCH") or environ.get("HTTP_IF_NONE_MATCH")
        )
        if conditional:
            with FAULTS.conditional:
                answer_status, headers, body = _call_app(app, environ)
        else:
            answer_status, headers, body = _call_app(app, environ)
        if delay:
            time.sleep(delay)
        entry["status"] = int(answer_status.split()[0])
        return _answer(start_response, answer_status, headers, body)
    finally:
        entry["end"] = time.time()


# --- the middleware -------------------------------------------------------------------------


def _s3_object(environ) -> tuple[str, str] | None:
    """`(bucket, key)` of a path-style S3 object request, else None."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    signed_for_s3 = "/s3/aws4_request" in auth or "/s3/aws4_request" in unquote(environ.get("QUERY_STRING", ""))
    if not signed_for_s3:
        return None
    path = environ.get("PATH_INFO", "")
    if isinstance(path, bytes):
        path = path.decode("utf-8")
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key:
        return None
    return bucket, key


def _call_app(app, environ):
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status
        captured["headers"] = headers
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def _answer(start_response, status: str, headers: list, body: bytes):
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


def _json_access_denied(app, environ, start_response):
    """A refusal of a JSON-protocol call (KMS, Kinesis) as the real services send it: HTTP
    400 with `{"__type": "AccessDeniedException", "message": ...}`; moto sends its XML
    query-protocol error with 403, which the SDKs cannot parse."""
    status, headers, body = _call_app(app, environ)
    if status.startswith("403") and b"<Code>AccessDenied</Code>" in body:
        m = re.search(rb"<Message>(.*?)</Message>", body, re.S)
        message = m.group(1).decode("utf-8", "replace") if m else "Access Denied"
        answer = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
        return _answer(start_response, "400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")], answer)
    return _answer(start_response, status, headers, body)


_original_call = DomainDispatcherApplication.__call__


def _call(self, environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path.startswith("/_pcr/lost-responses"):
        return _control(environ, start_response)
    handler = _NOT_IN_MOTO.get(environ.get("HTTP_X_AMZ_TARGET", ""))
    if handler is not None:
        return _not_in_moto(environ, start_response, handler)
    if path.startswith("/_pcr/faults"):
        return _faults_control(environ, start_response)
    if path.startswith("/_pcr/requests"):
        return _requests_control(environ, start_response)
    kinesis = _kinesis_call(environ)
    if kinesis is not None:
        operation, stream = kinesis
        inner = lambda e, s: _call_inner(self, e, s)  # noqa: E731
        return _with_faults(inner, environ, start_response, "kinesis", stream, operation, None)
    target = _s3_object(environ)
    if target is not None:
        bucket, key = target
        inner = lambda e, s: _call_inner(self, e, s)  # noqa: E731
        return _with_faults(inner, environ, start_response, "s3", bucket, environ.get("REQUEST_METHOD", ""), key)
    return _call_inner(self, environ, start_response)


def _call_inner(self, environ, start_response):
    target = _s3_object(environ)
    method = environ.get("REQUEST_METHOD", "")
    if target is None and environ.get("HTTP_X_AMZ_TARGET") and _iam_enforced():
        return _json_access_denied(lambda e, s: _original_call(self, e, s), environ, start_response)
    if target is None:
        return _original_call(self, environ, start_response)
    bucket, key = target
    app = lambda e, s: _original_call(self, e, s)  # noqa: E731
    if method in ("GET", "HEAD") and not (set(parse_qs(environ.get("QUERY_STRING", ""))) & _NOT_OBJECT_READS):
        status, headers, body = _call_app(app, environ)
        if status.startswith("404"):
            missing_key = b"<Code>NoSuchKey</Code>" in body if method == "GET" else _bucket_exists(bucket)
            if missing_key and not _may_list_bucket(environ, bucket):
                xml = [("Content-Type", "application/xml")]
                return _answer(start_response, "403 Forbidden", xml, ACCESS_DENIED if method == "GET" else b"")
        return _answer(start_response, status, headers, body)
    if method in ("PUT", "DELETE") and LOST.rules:
        status, headers, body = _call_app(app, environ)
        if status[:1] == "2":
            rule = LOST.pick(bucket, key)
            if rule is not None:
                with LOST.lock:
                    rule["lost"] += 1
                log(f"lost the answer to {method} {bucket}/{key} (committed, {status.split()[0]}); answering 500")
                return _answer(start_response, "500 Internal Server Error", [("Content-Type", "application/xml")], INTERNAL_ERROR)
        return _answer(start_response, status, headers, body)
    return _original_call(self, environ, start_response)


DomainDispatcherApplication.__call__ = _call


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--exit-with-parent" in args:
        args.remove("--exit-with-parent")
        _exit_with_parent()
    sys.exit(main(args))
