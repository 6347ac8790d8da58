#!/usr/bin/env python3
"""docs/switch-over.md, run: every ```sh block of the runbook, in order, as one shell
session, against a moto that holds a deployment of the Python service; the alarm stack
(deploy/pc-reserve-poller-stack.yaml) deployed by the runbook's own `aws cloudformation
deploy` and checked resource by resource.

The moto is the local stack's (scripts/local-stack/moto_server.py from .venv), started on a
free loopback port for this test alone and stopped with it: the runbook creates IAM roles,
a stack and ECR tags under fixed names, which a second run against a long-lived server
would find already there. The awscli is the venv's (scripts/local-stack/requirements.txt).

Each ```sh block is preceded by `<!-- step: NAME -->`; the test runs it with bash
(`set -euo pipefail`), carrying the variables it assigns to the next block, after
replacing each `<placeholder>` with the test's value (an unknown placeholder fails). Between
blocks the test plays what happens outside the runbook (the build workflow pushing an
image, ECS writing a task's log, a release deploying) and asserts what each block did.

moto's CloudFormation skips the types it does not model (AWS::SNS::TopicPolicy,
AWS::SNS::Subscription, AWS::Logs::MetricFilter, AWS::CloudWatch::Alarm) with a warning;
the test creates each through moto's own API from the template's properties, resolved with
the stack's parameters, and reads it back: the alarms as written (TreatMissingData
breaching on the lag alarm), the metric filters matching a failed run's ERROR line in text
and in JSON and no INFO, WARN or metrics line (TestMetricFilter).

    .venv/bin/python scripts/checks/test_switch_over.py          (scripts/test.sh runs it)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import boto3
from awscli.customizations.cloudformation.yamlhelper import yaml_parse

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "switch-over.md"
TEMPLATE = REPO / "deploy" / "pc-reserve-poller-stack.yaml"
VENV_BIN = REPO / ".venv" / "bin"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cfn_policy  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-east-1"
ENV = "qa"
CLUSTER = f"pc-reserve-poller-{ENV}"
SERVICE = f"pc-reserve-poller-app-{ENV}"
FAMILY = f"pc-reserve-poller-app-{ENV}"
CONTAINER = f"pc-reserve-poller-app-{ENV}"
LOG_GROUP = f"/ecs/pc-reserve-poller-{ENV}"
TASK_ROLE = f"pc-reserve-poller-task-role-{ENV}"
SCHEDULE_RULE = f"pc-reserve-poller-schedule-{ENV}"
BUCKET = f"bic-poller-states-{ENV}"
PYTHON_SHA = "9f1c2e4d5b6a79880716253443526170809a0b1c"
RUST_SHA = "3a4b5c6d7e8f90112233445566778899aabbccdd"
KMS_KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
STREAM = "PcReserve-qa"
REPOSITORY = "example/pc-reserve-poller"
PYTHON_SUBJECT = "repo:example/PcReservePoller:*"

PLACEHOLDERS = {
    "<owner/repository>": REPOSITORY,
    "<the Python repository's subject, as the role trusts it now>": PYTHON_SUBJECT,
    "<team address>": "pcr-alarms@example.org",
    "<kms key id>": KMS_KEY_ID,
    "<stream name>": STREAM,
    "<commit>": RUST_SHA,
}
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")

# moto's CloudFormation does not model these: the test creates them through the APIs.
SKIPPED_BY_MOTO = {"AWS::SNS::TopicPolicy", "AWS::SNS::Subscription", "AWS::Logs::MetricFilter", "AWS::CloudWatch::Alarm"}

# A failed run's last line in each LOG_FORMAT, and lines that must not count as failures.
CAUSE = (
    "Envisionware: cannot connect: error communicating with database: Connection refused (os error 111) "
    "(check ENVISIONWARE_DB_HOST, _PORT, _USER, _PASSWORD and that the database accepts connections)"
)
ERROR_TEXT = f"2026-12-08T01:02:03.456789Z ERROR {CAUSE} stage=Envisionware exit_code=1"
ERROR_JSON = json.dumps(
    {"timestamp": "2026-12-08T01:02:03.456789Z", "level": "ERROR", "message": CAUSE, "stage": "Envisionware", "exit_code": 1},
    separators=(",", ":"),
)
NOT_FAILURES = [
    "2026-12-08T01:02:03.456789Z  INFO run finished summary=batches=0 reservations=0 records=0",
    "2026-12-08T01:02:03.456789Z  WARN lease lost: another runner took it; stopping before the next request",
    "2026-12-08T01:02:03.456789Z  INFO stopped (SIGTERM); the cursor is saved exit_code=6",
    json.dumps({"timestamp": "2026-12-08T01:02:03Z", "level": "INFO", "message": "run finished"}, separators=(",", ":")),
    json.dumps({"timestamp": "2026-12-08T01:02:03Z", "level": "WARN", "message": "another runner holds the lease",
                "exit_code": 3}, separators=(",", ":")),
    json.dumps({"Environment": "qa", "RunsFailed": 1, "_aws": {"CloudWatchMetrics": [{"Namespace": "PcReservePoller"}]}},
               separators=(",", ":")),
    "pc-reserve-poller: error text without a time, level or stage",
]


def python_manifest(tag: str) -> str:
    """An image manifest whose bytes differ per image (as two builds' manifests do)."""
    digest = __import__("hashlib").sha256(tag.encode()).hexdigest()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469, "digest": f"sha256:{digest}"},
            "layers": [
                {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2048, "digest": f"sha256:{digest[::-1]}"}
            ],
        },
        indent=3,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the runbook's blocks ---------------------------------------------------------------


def sh_blocks(text: str) -> list[tuple[str, str]]:
    """`(step, body)` of every ```sh block, in order; each must be named."""
    blocks = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M):
        if m.group(1) != "sh":
            continue
        before = text[: m.start()].rstrip().splitlines()[-1] if text[: m.start()].strip() else ""
        step = re.fullmatch(r"<!-- step: ([\w-]+) -->", before.strip())
        if not step:
            raise AssertionError(f"docs/switch-over.md: a ```sh block has no `<!-- step: NAME -->` line before it: {m.group(2)[:80]!r}")
        blocks.append((step.group(1), m.group(2)))
    return blocks


def substitute(body: str) -> str:
    unknown = sorted({p for p in PLACEHOLDER.findall(body) if p not in PLACEHOLDERS})
    if unknown:
        raise AssertionError(f"docs/switch-over.md: placeholders the test has no value for: {unknown}")
    return PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(0)], body)


# --- CloudFormation values, resolved like CloudFormation -----------------------------------


class Resolver:
    def __init__(self, template: dict, parameters: dict[str, str], physical: dict[str, str]) -> None:
        self.template = template
        self.values = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws", **parameters, **physical}
        self.conditions = {name: self(cond) for name, cond in template.get("Conditions", {}).items()}

    def __call__(self, value):
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.values[arg]
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], {k: self(v) for k, v in arg[1].items()})
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(extra.get(m.group(1), self.values.get(m.group(1)))), text)
            if key == "Fn::If":
                return self(arg[1] if self.conditions[arg[0]] else arg[2])
            if key == "Fn::Equals":
                return self(arg[0]) == self(arg[1])
            if key == "Fn::Not":
                return not self(arg[0])
        return {k: self(v) for k, v in value.items()}


def stopped_event(code, cluster: str = CLUSTER, stop_code: str = "EssentialContainerExited") -> str:
    container = {"name": CONTAINER, "lastStatus": "STOPPED"}
    if code is not None:
        container["exitCode"] = code
    return json.dumps(
        {
            "version": "0", "id": "3317b2af-7005-947d-b652-f55e762e571a", "detail-type": "ECS Task State Change",
            "source": "aws.ecs", "account": ACCOUNT, "time": "2026-12-08T01:02:03Z", "region": REGION,
            "resources": [f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/0123456789abcdef"],
            "detail": {
                "clusterArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{cluster}",
                "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "stopCode": stop_code,
                "containers": [container],
            },
        }
    )


class SwitchOver(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls) -> None:
        port = free_port()
        cls.endpoint = f"http://127.0.0.1:{port}"
        cls.moto_log = tempfile.NamedTemporaryFile(prefix="pcr-switch-over-moto-", suffix=".log", delete=False).name
        with open(cls.moto_log, "w") as log:
            cls.moto = subprocess.Popen(
                [str(VENV_BIN / "python"), str(REPO / "scripts/local-stack/moto_server.py"), "-H", "127.0.0.1", "-p", str(port), "--exit-with-parent"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        cls.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("AWS_") and k not in ("ENVIRONMENT",)
        }
        cls.env.update(
            AWS_ENDPOINT_URL=cls.endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}", AWS_PAGER="",
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if cls.moto.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto did not start; see {cls.moto_log}")
                time.sleep(0.2)
        cls.session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
        cls.workdir = Path(tempfile.mkdtemp(prefix="pcr-switch-over-"))
        (cls.workdir / "deploy").symlink_to(REPO / "deploy")
        cls.python_digest = None

    @classmethod
    def tearDownClass(cls) -> None:
        cls.moto.terminate()
        try:
            cls.moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.moto.kill()
            cls.moto.wait(timeout=10)
        shutil.rmtree(cls.workdir, ignore_errors=True)
        print(f"test_switch_over: moto's log is {cls.moto_log}", file=sys.stderr)

    def client(self, service: str):
        return self.session.client(service, endpoint_url=self.endpoint)

    # --- the Python service's deployment, as the runbook finds it ---------------------------

    def lay_out_the_python_deployment(self) -> None:
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        self.subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{n}.0/24")["Subnet"]["SubnetId"] for n in (1, 2)]
        self.security_group = ec2.create_security_group(GroupName="pc-reserve-poller", Description="poller", VpcId=vpc)["GroupId"]
        iam = self.client("iam")
        iam.create_open_id_connect_provider(Url="https://token.actions.githubusercontent.com", ClientIDList=["sts.amazonaws.com"], ThumbprintList=["0" * 40])
        trust = {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringLike": {"token.actions.githubusercontent.com:sub": PYTHON_SUBJECT}},
            }],
        }
        iam.create_role(RoleName="GithubActionsDeployerRole", AssumeRolePolicyDocument=json.dumps(trust))
        ecs_trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        iam.create_role(RoleName=TASK_ROLE, AssumeRolePolicyDocument=ecs_trust)
        iam.create_role(RoleName="ecsTaskExecutionRole", AssumeRolePolicyDocument=ecs_trust)
        self.client("logs").create_log_group(logGroupName=LOG_GROUP)
        ecr = self.client("ecr")
        uri = ecr.create_repository(repositoryName="pc-reserve-poller")["repository"]["repositoryUri"]
        for tag in (PYTHON_SHA, f"{ENV}-latest"):
            image = ecr.put_image(repositoryName="pc-reserve-poller", imageTag=tag, imageManifest=python_manifest("python"))
        self.python_digest = image["image"]["imageId"]["imageDigest"]
        ecs = self.client("ecs")
        ecs.create_cluster(clusterName=CLUSTER)
        self.python_task_definition = ecs.register_task_definition(
            family=FAMILY, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="512", memory="1024",
            taskRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{TASK_ROLE}",
            executionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole",
            containerDefinitions=[{
                "name": CONTAINER, "image": f"{uri}:{ENV}-latest", "essential": True,
                "command": ["python3", "./main.py"], "workingDirectory": "/src", "user": "app",
                "environment": [{"name": "ENVIRONMENT", "value": ENV}],
                "healthCheck": {"command": ["CMD-SHELL", "pgrep -f main.py || exit 1"], "interval": 30},
                "logConfiguration": {"logDriver": "awslogs", "options": {
                    "awslogs-group": LOG_GROUP, "awslogs-region": REGION, "awslogs-stream-prefix": "ecs"}},
            }],
        )["taskDefinition"]["taskDefinitionArn"]
        network = {"awsvpcConfiguration": {"subnets": self.subnets, "securityGroups": [self.security_group], "assignPublicIp": "DISABLED"}}
        ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition=self.python_task_definition,
                           desiredCount=0, launchType="FARGATE", networkConfiguration=network)
        events = self.client("events")
        events.put_rule(Name=SCHEDULE_RULE, ScheduleExpression="rate(15 minutes)", State="ENABLED")
        events.put_targets(Rule=SCHEDULE_RULE, Targets=[{
            "Id": "pc-reserve-poller", "Arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}",
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/ecsEventsRole",
            "EcsParameters": {
                "TaskDefinitionArn": self.python_task_definition, "TaskCount": 1, "LaunchType": "FARGATE",
                "NetworkConfiguration": {"awsvpcConfiguration": {"Subnets": self.subnets, "SecurityGroups": [self.security_group], "AssignPublicIp": "DISABLED"}},
            },
        }])
        s3 = self.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="pc_reserve_poller_state.json", Body=b'{"pcr_key": "41020032", "pcr_date_time": "2026-12-08 00:59:00"}')

    # --- running a block --------------------------------------------------------------------

    def run_block(self, step: str, body: str, names: list[str]) -> str:
        state = self.workdir / "state.sh"
        script = "set -euo pipefail\n"
        script += f"[ ! -f {shlex.quote(str(state))} ] || . {shlex.quote(str(state))}\n"
        script += substitute(body)
        script += "\n{ " + "; ".join(f"declare -p {n} 2>/dev/null || true" for n in names) + f"; }} > {shlex.quote(str(state))}.new\n"
        script += f"mv {shlex.quote(str(state))}.new {shlex.quote(str(state))}\n"
        result = subprocess.run(["bash", "-c", script], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=300)
        print(f"\n--- step {step}: exit {result.returncode}\n{result.stdout}{result.stderr}", file=sys.stderr, end="")
        self.assertEqual(result.returncode, 0, f"step {step} of docs/switch-over.md failed:\n{result.stderr}")
        return result.stdout

    def var(self, name: str) -> str:
        script = f". {shlex.quote(str(self.workdir / 'state.sh'))}; printf %s \"${name}\""
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout

    # --- the test ---------------------------------------------------------------------------

    def test_every_command_of_the_runbook_runs_and_does_what_it_says(self) -> None:
        self.lay_out_the_python_deployment()
        text = DOC.read_text()
        blocks = sh_blocks(text)
        steps = [s for s, _ in blocks]
        self.assertEqual(len(steps), len(set(steps)), f"step names repeat: {steps}")
        names = sorted({m for _, b in blocks for m in re.findall(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=", b, re.M)})
        before = {"image": self.push_the_commit_image, "one-off-results": self.write_the_one_off_logs,
                  "watch": self.release_the_new_image, "stopped": self.stop_a_failed_task}
        after = {name[len("after_"):].replace("_", "-"): getattr(self, name) for name in dir(self) if name.startswith("after_")}
        for hook in list(before) + list(after):
            self.assertIn(hook, steps, f"the test plays a step docs/switch-over.md no longer has: {hook}")
        for step, body in blocks:
            if step in before:
                before[step]()
            out = self.run_block(step, body, names)
            if step in after:
                after[step](out)
        for required in ("variables", "trust", "stack", "rule", "read", "clean", "one-off", "record", "back", "stopped", "lease"):
            self.assertIn(required, steps)

    def test_the_error_filters_count_each_failed_run_of_the_binary_once_in_text_and_json(self) -> None:
        """The stack's two metric filters against what the poller really prints when a run
        fails (exit 1), its configuration is wrong (exit 2) and `check` fails (exit 7), in
        each LOG_FORMAT: exactly one line counts, the log's last, and only through the filter of
        its format. Needs the demo's build (`.local/bin/pc-reserve-poller`, or PCR_BIN) and
        the local stack (config/local.yaml)."""
        binary = Path(os.environ.get("PCR_BIN") or REPO / ".local" / "bin" / "pc-reserve-poller")
        if not binary.exists() or not (REPO / "config" / "local.yaml").exists():
            self.skipTest(f"no {binary} or config/local.yaml: run scripts/demo.sh first")
        template = yaml_parse(TEMPLATE.read_text())
        patterns = {
            fmt: template["Resources"][name]["Properties"]["FilterPattern"]
            for fmt, name in (("text", "ErrorLineTextFilter"), ("json", "ErrorLineJsonFilter"))
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PCR_")) and k not in (
            "ENVIRONMENT", "LOG_LEVEL", "LOG_FORMAT", "IGNORE_CACHE", "IGNORE_KINESIS", "MAX_BATCHES")}
        env["ENVIRONMENT"] = "local"
        cases = [
            (["--set", "ENVISIONWARE_DB_PORT=1", "--set", "RETRY_ATTEMPTS=1", "run", "--dry-run", "--ignore-cache", "--output", "-"], 1),
            (["--set", "KINESIS_BATCH_SIZE=0", "run"], 2),
            (["--set", "ENVISIONWARE_DB_PORT=1", "check"], 7),
        ]
        logs = self.client("logs")
        for fmt in ("text", "json"):
            for args, code in cases:
                with self.subTest(format=fmt, args=args):
                    result = subprocess.run([str(binary), "--set", f"LOG_FORMAT={fmt}", *args], cwd=REPO, env=env,
                                            capture_output=True, text=True, timeout=120)
                    self.assertEqual(result.returncode, code, result.stderr)
                    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
                    counted = {
                        f: [m["eventMessage"] for m in logs.test_metric_filter(filterPattern=p, logEventMessages=lines)["matches"]]
                        for f, p in patterns.items()
                    }
                    other = "json" if fmt == "text" else "text"
                    self.assertEqual(counted[other], [], f"the {other} filter counts a {fmt} line")
                    self.assertEqual(len(counted[fmt]), 1, f"one line of a failed run counts, not {counted[fmt]}:\n{result.stderr}")
                    self.assertEqual(counted[fmt][0], result.stderr.rstrip("\n").splitlines()[-1], "the last line of the log counts")

    # --- what happens outside the runbook ---------------------------------------------------

    def push_the_commit_image(self) -> None:
        """build-image.yml: the commit's image, under its SHA only."""
        self.client("ecr").put_image(repositoryName="pc-reserve-poller", imageTag=RUST_SHA, imageManifest=python_manifest("rust"))

    def write_the_one_off_logs(self) -> None:
        """ECS ran the check task and its awslogs stream holds its lines."""
        logs = self.client("logs")
        task_id = self.var("CHECK_TASK").rsplit("/", 1)[-1]
        stream = f"ecs/{CONTAINER}/{task_id}"
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)
        lines = ["✓ configuration 41 ms  config/qa.yaml valid, secrets decrypted", "✓ S3 cursor 35 ms  s3://bic-poller-states-qa/pc_reserve_poller_state.json at 2026-12-08 00:59:00"]
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(lines)])

    def release_the_new_image(self) -> None:
        """deploy-qa.yml on a qa-... release: the image as qa-latest and its SHA, then a new deployment."""
        self.client("ecr").put_image(repositoryName="pc-reserve-poller", imageTag=f"{ENV}-latest", imageManifest=python_manifest("rust"))
        self.client("ecs").update_service(cluster=CLUSTER, service=SERVICE, forceNewDeployment=True)
        logs = self.client("logs")
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=f"ecs/{CONTAINER}/first-rust-run")
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=f"ecs/{CONTAINER}/first-rust-run", logEvents=[
            {"timestamp": int(time.time() * 1000), "message": '2026-12-08T01:15:02.1Z  INFO run finished summary=batches=1 reservations=12 records=12 cursor_before="2026-12-08 00:59:00" cursor_after="2026-12-08 01:14:40" cursor_lag=0s duration=1.2s'}])

    def stop_a_failed_task(self) -> None:
        """A scheduled task failed: stopped, its ERROR line in its log."""
        ecs = self.client("ecs")
        task = ecs.run_task(cluster=CLUSTER, taskDefinition=FAMILY, launchType="FARGATE", networkConfiguration={
            "awsvpcConfiguration": {"subnets": self.subnets, "securityGroups": [self.security_group]}})["tasks"][0]["taskArn"]
        ecs.stop_task(cluster=CLUSTER, task=task, reason="Essential container in task exited")
        stream = f"ecs/{CONTAINER}/{task.rsplit('/', 1)[-1]}"
        logs = self.client("logs")
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[
            {"timestamp": int(time.time() * 1000), "message": "2026-12-08T01:02:03.4Z  INFO lease taken owner=ip-10-20-1-7/1/9bba4162"},
            {"timestamp": int(time.time() * 1000) + 1, "message": ERROR_TEXT}])
        self.client("s3").put_object(Bucket=BUCKET, Key="pc_reserve_poller_state.json.lease", Body=json.dumps(
            {"owner": "ip-10-20-1-7/1/9bba4162", "acquired_at": "2026-12-08T01:00:00Z", "expires_at": "2026-12-08T01:02:00Z"}).encode())

    # --- what each block did ----------------------------------------------------------------

    def after_variables(self, out: str) -> None:
        self.assertEqual(out.strip(), f"account {ACCOUNT}, container {CONTAINER}, log group {LOG_GROUP}, task role {TASK_ROLE}")

    def after_trust(self, out: str) -> None:
        role = self.client("iam").get_role(RoleName="GithubActionsDeployerRole")["Role"]
        doc = role["AssumeRolePolicyDocument"]
        doc = json.loads(doc) if isinstance(doc, str) else doc
        (statement,) = doc["Statement"]
        self.assertEqual(statement["Action"], "sts:AssumeRoleWithWebIdentity")
        self.assertEqual(statement["Condition"]["StringEquals"], {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"})
        self.assertEqual(statement["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"], [
            f"repo:{REPOSITORY}:environment:qa", f"repo:{REPOSITORY}:environment:production", PYTHON_SUBJECT])
        self.assertIn(PYTHON_SUBJECT, out, "the block shows the subject the role trusts before it changes it")

    def after_stack(self, out: str) -> None:
        cfn = self.client("cloudformation")
        stack_name = f"pc-reserve-poller-alarms-{ENV}"
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        self.assertEqual(stack["StackStatus"], "CREATE_COMPLETE")
        template = yaml_parse(TEMPLATE.read_text())
        parameters = {n: p.get("Default", "") for n, p in template["Parameters"].items()}
        parameters.update({p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]})
        self.assertEqual(parameters["LogGroupName"], LOG_GROUP)
        self.assertEqual(parameters["TaskRoleName"], TASK_ROLE)
        resources = cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
        physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources if r.get("LogicalResourceId")}
        for name, resource in template["Resources"].items():
            if resource["Type"] not in SKIPPED_BY_MOTO:
                self.assertIn(name, physical, f"moto's CloudFormation did not create {name} ({resource['Type']})")
        resolve = Resolver(template, parameters, physical)
        topic = physical["AlarmTopic"]
        self.assertEqual(topic, f"arn:aws:sns:{REGION}:{ACCOUNT}:pc-reserve-poller-alarms-{ENV}")
        self.assertIn(f"AlarmTopic\tCREATE_COMPLETE\t{topic}", out)
        self.assertIn(f"CREATE_COMPLETE\n", out)

        # The task role's policy: exactly deploy/iam-policy.json's statements.
        iam = self.client("iam")
        policy_arn = physical["TaskPolicy"]
        version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]["Document"]
        document = json.loads(document) if isinstance(document, str) else document
        policy = json.loads(cfn_policy.POLICY.read_text())
        values = {name: parameters[cfn_policy.parameter_name(name)] for name in cfn_policy.placeholders(policy)}
        self.assertEqual(document, cfn_policy.resolved(policy, ACCOUNT, REGION, values))
        self.assertEqual(
            [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=TASK_ROLE)["AttachedPolicies"]], [policy_arn])

        # The EventBridge rules: their patterns as written, targeting the topic, and
        # matching exactly the stops that need a person.
        events = self.client("events")
        matches = {}
        for name in ("TaskFailedRule", "TaskFailedToStartRule"):
            props = template["Resources"][name]["Properties"]
            rule = events.describe_rule(Name=physical[name])
            self.assertEqual(json.loads(rule["EventPattern"]), resolve(props["EventPattern"]))
            self.assertEqual(rule["State"], "ENABLED")
            self.assertEqual([t["Arn"] for t in events.list_targets_by_rule(Rule=physical[name])["Targets"]], [topic])
            samples = {f"exit {c}": stopped_event(c) for c in (0, 1, 3, 4, 5, 6)}
            samples["exit 1 in another cluster"] = stopped_event(1, cluster="another-cluster")
            samples["failed to start"] = stopped_event(None, stop_code="TaskFailedToStart")
            matches[name] = sorted(k for k, e in samples.items() if events.test_event_pattern(EventPattern=rule["EventPattern"], Event=e)["Result"])
        self.assertEqual(matches, {"TaskFailedRule": ["exit 1", "exit 4", "exit 5"], "TaskFailedToStartRule": ["failed to start"]})

        # What moto's CloudFormation skipped, created from the template's properties.
        sns = self.client("sns")
        skipped = {n: r for n, r in template["Resources"].items() if r["Type"] in SKIPPED_BY_MOTO}
        self.assertEqual(sorted(r["Type"] for r in skipped.values()), sorted(
            ["AWS::SNS::TopicPolicy", "AWS::SNS::Subscription", "AWS::Logs::MetricFilter", "AWS::Logs::MetricFilter",
             "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Alarm"]))
        for name, resource in skipped.items():
            if "Condition" in resource:
                self.assertTrue(resolve.conditions[resource["Condition"]], f"{name} is created with these parameters")
            props = resolve(resource["Properties"])
            kind = resource["Type"]
            if kind == "AWS::SNS::TopicPolicy":
                for arn in props["Topics"]:
                    sns.set_topic_attributes(TopicArn=arn, AttributeName="Policy", AttributeValue=json.dumps(props["PolicyDocument"]))
                    policy_doc = json.loads(sns.get_topic_attributes(TopicArn=arn)["Attributes"]["Policy"])
                    self.assertEqual(policy_doc, props["PolicyDocument"])
                    principals = [s["Principal"]["Service"] for s in policy_doc["Statement"]]
                    self.assertIn("events.amazonaws.com", principals)
            elif kind == "AWS::SNS::Subscription":
                sns.subscribe(TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"])
                subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
                self.assertEqual([(s["Protocol"], s["Endpoint"]) for s in subs], [("email", PLACEHOLDERS["<team address>"])])
            elif kind == "AWS::Logs::MetricFilter":
                self.check_metric_filter(props)
            elif kind == "AWS::CloudWatch::Alarm":
                self.check_alarm(props, topic)

    def check_metric_filter(self, props: dict) -> None:
        logs = self.client("logs")
        transformations = [
            {"metricNamespace": t["MetricNamespace"], "metricName": t["MetricName"], "metricValue": t["MetricValue"], "unit": t["Unit"]}
            for t in props["MetricTransformations"]
        ]
        logs.put_metric_filter(logGroupName=props["LogGroupName"], filterName=props["FilterName"],
                               filterPattern=props["FilterPattern"], metricTransformations=transformations)
        (written,) = logs.describe_metric_filters(logGroupName=LOG_GROUP, filterNamePrefix=props["FilterName"])["metricFilters"]
        self.assertEqual(written["filterPattern"], props["FilterPattern"])
        self.assertEqual(written["metricTransformations"][0]["metricName"], f"ErrorLogLines-{ENV}")
        self.assertEqual(written["metricTransformations"][0]["metricNamespace"], "PcReservePoller")
        lines = [ERROR_TEXT, ERROR_JSON, *NOT_FAILURES]
        matched = [m["eventMessage"] for m in logs.test_metric_filter(filterPattern=props["FilterPattern"], logEventMessages=lines)["matches"]]
        want = {"[time, level = \"ERROR\", ...]": [ERROR_TEXT], "{ $.level = \"ERROR\" }": [ERROR_JSON]}
        self.assertIn(props["FilterPattern"], want, "docs/deploying.md names these two patterns")
        self.assertEqual(matched, want[props["FilterPattern"]])

    def check_alarm(self, props: dict, topic: str) -> None:
        cloudwatch = self.client("cloudwatch")
        args = {k: v for k, v in props.items() if k not in ("Dimensions",)}
        args["Threshold"] = float(args["Threshold"])
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in args:
                args[key] = int(args[key])
        if "Dimensions" in props:
            args["Dimensions"] = props["Dimensions"]
        cloudwatch.put_metric_alarm(**args)
        (alarm,) = cloudwatch.describe_alarms(AlarmNames=[props["AlarmName"]])["MetricAlarms"]
        for key, value in args.items():
            self.assertEqual(alarm[key], value, f"{props['AlarmName']}: {key}")
        self.assertEqual(alarm["AlarmActions"], [topic])
        if props["MetricName"] == "CursorLagSeconds":
            self.assertEqual(alarm["TreatMissingData"], "breaching")
            self.assertEqual(alarm["Statistic"], "Maximum")
            self.assertEqual(alarm["Namespace"], "PcReservePoller")
            self.assertEqual(alarm["Dimensions"], [{"Name": "Environment", "Value": ENV}])
            self.assertEqual(alarm["Threshold"], 7200.0)
        elif props["MetricName"] == "LateRows":
            self.assertEqual(alarm["TreatMissingData"], "notBreaching")
            self.assertEqual((alarm["Statistic"], alarm["Period"], alarm["ComparisonOperator"], alarm["Threshold"]),
                             ("Maximum", 3600, "GreaterThanThreshold", 0.0))
            self.assertEqual(alarm["Dimensions"], [{"Name": "Environment", "Value": ENV}])
        else:
            self.assertEqual(alarm["MetricName"], f"ErrorLogLines-{ENV}")
            self.assertEqual((alarm["Statistic"], alarm["Period"], alarm["ComparisonOperator"], alarm["Threshold"]),
                             ("Sum", 300, "GreaterThanOrEqualToThreshold", 1.0))

    def after_rule(self, out: str) -> None:
        self.assertEqual(out.split(), ["true", "false"])

    def after_read(self, out: str) -> None:
        self.assertIn("python3", out)
        self.assertIn("CMD-SHELL", out)
        self.assertEqual(self.var("SCHEDULE_RULE"), SCHEDULE_RULE)
        self.assertIn("rate(15 minutes)", out)

    def after_clean(self, out: str) -> None:
        ecs = self.client("ecs")
        new = self.var("TASK_DEFINITION")
        self.assertEqual(new, f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{FAMILY}:2")
        td = ecs.describe_task_definition(taskDefinition=new)["taskDefinition"]
        (container,) = td["containerDefinitions"]
        for key in ("command", "entryPoint", "workingDirectory", "user", "healthCheck"):
            self.assertNotIn(key, container)
        old = ecs.describe_task_definition(taskDefinition=self.python_task_definition)["taskDefinition"]
        for key in ("taskRoleArn", "executionRoleArn", "networkMode", "cpu", "memory"):
            self.assertEqual(td[key], old[key])
        self.assertEqual(container["image"], old["containerDefinitions"][0]["image"])
        self.assertEqual(container["logConfiguration"], old["containerDefinitions"][0]["logConfiguration"])
        self.assertEqual(container["environment"], [{"name": "ENVIRONMENT", "value": ENV}])
        service = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
        self.assertEqual(service["taskDefinition"], new)
        (target,) = self.client("events").list_targets_by_rule(Rule=SCHEDULE_RULE)["Targets"]
        self.assertEqual(target["EcsParameters"]["TaskDefinitionArn"], new)
        self.assertEqual(target["EcsParameters"]["NetworkConfiguration"]["awsvpcConfiguration"]["Subnets"], self.subnets)

    def after_image(self, out: str) -> None:
        self.assertTrue(out.startswith("sha256:"), out)

    def after_one_off(self, out: str) -> None:
        ecs = self.client("ecs")
        check_family = f"pc-reserve-poller-check-{ENV}"
        td = ecs.describe_task_definition(taskDefinition=check_family)["taskDefinition"]
        self.assertTrue(td["containerDefinitions"][0]["image"].endswith(f"/pc-reserve-poller:{RUST_SHA}"))
        self.assertNotIn("command", td["containerDefinitions"][0])
        self.assertEqual(td["taskRoleArn"], f"arn:aws:iam::{ACCOUNT}:role/{TASK_ROLE}")
        tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=[self.var("CHECK_TASK"), self.var("DRY_RUN_TASK")])["tasks"]
        commands = [t["overrides"]["containerOverrides"][0]["command"] for t in tasks]
        self.assertEqual(sorted(commands), sorted([["check"], ["run", "--dry-run", "--output", "-"]]))
        for task in tasks:
            self.assertTrue(task["taskDefinitionArn"].endswith(f"task-definition/{check_family}:1"))
            self.assertEqual(task["overrides"]["containerOverrides"][0]["name"], CONTAINER)
            self.assertEqual(task["launchType"], "FARGATE")
        self.assertEqual(self.var("SUBNETS"), ",".join(self.subnets))
        # The schedule still runs the Python image.
        (target,) = self.client("events").list_targets_by_rule(Rule=SCHEDULE_RULE)["Targets"]
        self.assertTrue(target["EcsParameters"]["TaskDefinitionArn"].endswith(f"{FAMILY}:2"))

    def after_one_off_results(self, out: str) -> None:
        self.assertIn("✓ configuration", out)

    def after_record(self, out: str) -> None:
        self.assertEqual(self.var("PYTHON_DIGEST"), self.python_digest)

    def after_watch(self, out: str) -> None:
        self.assertIn("run finished", out)
        self.assertNotIn(self.python_digest, out, "qa-latest is the new image after the release")

    def after_back(self, out: str) -> None:
        ecr = self.client("ecr")
        latest = ecr.describe_images(repositoryName="pc-reserve-poller", imageIds=[{"imageTag": f"{ENV}-latest"}])["imageDetails"][0]
        self.assertEqual(latest["imageDigest"], self.python_digest)
        self.assertEqual(sorted(latest["imageTags"]), sorted([PYTHON_SHA, f"{ENV}-latest"]))
        rust = ecr.describe_images(repositoryName="pc-reserve-poller", imageIds=[{"imageTag": RUST_SHA}])["imageDetails"][0]
        self.assertEqual(rust["imageTags"], [RUST_SHA], "the new image keeps its SHA tag for the next attempt")
        self.assertEqual(out.split()[0], self.python_digest)

    def after_images(self, out: str) -> None:
        rows = [line.split("\t") for line in out.strip().splitlines()]
        self.assertEqual([r[1] for r in rows][-1], self.python_digest, "oldest last")
        self.assertEqual(len(rows), 2)

    def after_stopped(self, out: str) -> None:
        self.assertIn(ERROR_TEXT, out)
        self.assertIn("Essential container in task exited", out)

    def after_lease(self, out: str) -> None:
        self.assertIn('"owner": "ip-10-20-1-7/1/9bba4162"', out)

    def after_writer(self, out: str) -> None:
        self.assertIn(self.python_digest, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
