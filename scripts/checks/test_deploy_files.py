#!/usr/bin/env python3
"""The deployment files name exactly what the Python PcReservePoller's deployment names
(README "Switching from the Python service"), so that switching changes the image and
nothing else: the deploy workflows' trigger, tag prefix, role, ECR repository and tag,
ECS cluster and service; the config files' values, the Python service's own
(tests/fixtures/original-config/), KMS ciphertexts included, each of which must have the
form of a KMS ciphertext blob (checked, never decrypted).

Run by scripts/checks/lint-deploy.sh with the lint venv's Python (ruamel.yaml reads `on:` as
a key, where a YAML 1.1 reader would make it `true`).
"""

from __future__ import annotations

import base64
import re
import sys
import unittest
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]


def load(path: Path):
    return YAML(typ="safe").load(path.read_text())


class DeployWorkflows(unittest.TestCase):
    def check(self, env: str) -> None:
        wf = load(REPO / ".github" / "workflows" / f"deploy-{env}.yml")
        self.assertEqual(wf["on"], {"release": {"types": ["released"]}})
        self.assertEqual(wf["permissions"], {"contents": "read"})
        self.assertEqual(wf["env"]["AWS_REGION"], "us-east-1")
        self.assertEqual(wf["env"]["ECR_REPOSITORY"], "pc-reserve-poller")
        self.assertEqual(wf["env"]["IMAGE_TAG"], f"{env}-latest")
        self.assertEqual(wf["env"]["ECS_CLUSTER"], f"pc-reserve-poller-{env}")
        self.assertEqual(wf["env"]["ECS_SERVICE"], f"pc-reserve-poller-app-{env}")
        job = wf["jobs"]["deploy"]
        self.assertEqual(job["if"], f"startsWith(github.event.release.tag_name, '{env}')")
        self.assertEqual(job["environment"], env, "the deploy runs in the GitHub environment of its name")
        self.assertNotIn("id-token", wf["permissions"], "only the deploy job holds id-token: write")
        self.assertEqual(job["permissions"]["id-token"], "write")
        steps = job["steps"]
        creds = next(s for s in steps if s.get("uses", "").startswith("aws-actions/configure-aws-credentials"))
        self.assertTrue(creds["with"]["role-to-assume"].endswith(":role/GithubActionsDeployerRole"))
        script = "\n".join(s.get("run", "") for s in steps)
        self.assertIn('-t "$REGISTRY/$ECR_REPOSITORY:$IMAGE_TAG" -t "$REGISTRY/$ECR_REPOSITORY:$GITHUB_SHA"', script)
        self.assertIn(
            'aws ecs update-service --cluster "$ECS_CLUSTER" --service "$ECS_SERVICE" --force-new-deployment',
            script,
        )

    def test_qa(self) -> None:
        self.check("qa")

    def test_production(self) -> None:
        self.check("production")


class BuildImageWorkflow(unittest.TestCase):
    """build-image.yml pushes one commit's image under its SHA and moves nothing else."""

    def test_builds_a_ref_on_demand_and_pushes_only_the_sha(self) -> None:
        wf = load(REPO / ".github" / "workflows" / "build-image.yml")
        self.assertEqual(list(wf["on"]), ["workflow_dispatch"])
        self.assertIn("ref", wf["on"]["workflow_dispatch"]["inputs"])
        self.assertEqual(wf["permissions"], {"contents": "read"})
        self.assertEqual(wf["env"]["ECR_REPOSITORY"], "pc-reserve-poller")
        job = wf["jobs"]["build"]
        self.assertEqual(job["permissions"]["id-token"], "write")
        self.assertEqual(job.get("environment"), "qa")
        checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
        self.assertEqual(checkout["with"]["ref"], "${{ inputs.ref }}")
        self.assertIs(checkout["with"]["persist-credentials"], False)
        script = "\n".join(s.get("run", "") for s in job["steps"])
        self.assertIn('docker image push "$REGISTRY/$ECR_REPOSITORY:$SHA"', script)
        self.assertNotIn("latest", script)
        self.assertNotIn("--all-tags", script)
        self.assertNotIn("update-service", script)


class PinnedActions(unittest.TestCase):
    """Every workflow pins each action by a full commit SHA with its tag in a comment,
    has a top-level `permissions:` block and checks out without persisting credentials."""

    PINNED = re.compile(r"^\s*-?\s*uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # \S+$")

    def test_every_workflow(self) -> None:
        workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
        self.assertTrue(workflows)
        for path in workflows:
            text = path.read_text()
            for line in text.splitlines():
                if "uses:" in line and not line.lstrip().startswith("#"):
                    self.assertRegex(line, self.PINNED, f"{path.name}: {line.strip()}")
            wf = load(path)
            self.assertIn("permissions", wf, f"{path.name}: no top-level permissions block")
            for name, job in wf["jobs"].items():
                for step in job.get("steps", []):
                    if step.get("uses", "").startswith("actions/checkout@"):
                        self.assertIs(
                            (step.get("with") or {}).get("persist-credentials"),
                            False,
                            f"{path.name}: job {name} checks out with persisted credentials",
                        )


ORIGINAL = REPO / "tests" / "fixtures" / "original-config"
ENVIRONMENTS = ("devel", "qa", "production")


def scalars(path: Path) -> dict:
    """The two maps of a configuration file with every value as the text written in the
    file (YAML's base schema: no booleans, numbers or dates), so that `True`, `3306` and
    `2023-01-01 00:00:00 +0000` compare as written."""
    return YAML(typ="base").load(path.read_text())


def known_variables() -> set[str]:
    """The names src/config/variables.rs describes: what the program reads."""
    text = (REPO / "src" / "config" / "variables.rs").read_text()
    return set(re.findall(r"^    ([A-Z][A-Z0-9_]*): (?:Always|Optional|UnlessCacheIgnored),", text, re.M))


def der_item(blob: bytes, at: int) -> tuple[int, int, int]:
    """One DER item at `at`: its tag, where its content starts and where it ends."""
    tag = blob[at]
    first = blob[at + 1]
    if first < 0x80:
        return tag, at + 2, at + 2 + first
    count = first & 0x7F
    length = int.from_bytes(blob[at + 2 : at + 2 + count], "big")
    start = at + 2 + count
    return tag, start, start + length


# The OIDs a KMS symmetric ciphertext carries: CMS EncryptedData (1.2.840.113549.1.7.6),
# its content type data (1.2.840.113549.1.7.1) and AES-256-GCM (2.16.840.1.101.3.4.1.46).
OID_ENCRYPTED_DATA = bytes.fromhex("2a864886f70d010706")
OID_DATA = bytes.fromhex("2a864886f70d010701")
OID_AES_256_GCM = bytes.fromhex("60864801650304012e")


def kms_envelope(name: str, text: str) -> bytes:
    """Checks that `text` is the base64 of a KMS symmetric ciphertext blob and returns its
    key reference. The blob, as `aws kms encrypt` returns it: 01 (version), 01 or 02,
    02 00, 78, the 32-byte reference to the key (the same for every value under one key),
    the length of the rest (4 bytes, big-endian), then a DER CMS EncryptedData: version 0,
    content type data, AES-256-GCM with a 12-byte nonce and a 16-byte tag, and the
    encrypted content (the value plus the tag). Nothing is decrypted."""
    assert not text.startswith("<"), f"{name} is a placeholder: {text}"
    assert re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", text), f"{name} is not base64"
    blob = base64.b64decode(text, validate=True)
    assert blob[0] == 0x01 and blob[1] in (0x01, 0x02) and blob[2:5] == bytes.fromhex("020078"), (
        f"{name}: not a KMS ciphertext header: {blob[:5].hex()}"
    )
    key_ref = blob[5:37]
    rest = int.from_bytes(blob[37:41], "big")
    assert rest == len(blob) - 41, f"{name}: length field {rest}, {len(blob) - 41} bytes follow"
    tag, start, end = der_item(blob, 41)
    assert tag == 0x30 and end == len(blob), f"{name}: the CMS structure is not one SEQUENCE to the end"
    tag, s, e = der_item(blob, start)
    assert tag == 0x06 and blob[s:e] == OID_ENCRYPTED_DATA, f"{name}: not CMS EncryptedData"
    tag, s, e = der_item(blob, e)
    assert tag == 0xA0, f"{name}: no [0] content"
    tag, s, _ = der_item(blob, s)  # EncryptedData SEQUENCE
    tag, vs, ve = der_item(blob, s)
    assert tag == 0x02 and blob[vs:ve] == b"\x00", f"{name}: EncryptedData version is not 0"
    tag, s, eci_end = der_item(blob, ve)  # EncryptedContentInfo
    tag, os_, oe = der_item(blob, s)
    assert tag == 0x06 and blob[os_:oe] == OID_DATA, f"{name}: content type is not data"
    tag, alg_s, alg_e = der_item(blob, oe)
    tag, os_, oe = der_item(blob, alg_s)
    assert tag == 0x06 and blob[os_:oe] == OID_AES_256_GCM, f"{name}: not AES-256-GCM"
    tag, ps, _ = der_item(blob, oe)  # GCMParameters
    tag, ns, ne = der_item(blob, ps)
    assert tag == 0x04 and ne - ns == 12, f"{name}: the nonce is not 12 bytes"
    tag, ts, te = der_item(blob, ne)
    assert tag == 0x02 and blob[ts:te] == b"\x10", f"{name}: the tag is not 16 bytes"
    tag, cs, ce = der_item(blob, alg_e)
    assert tag == 0x80 and ce == eci_end == len(blob), f"{name}: no encrypted content at the end"
    assert 16 < ce - cs <= 4096 + 16, f"{name}: {ce - cs} bytes of encrypted content"
    return key_ref


class ConfigFiles(unittest.TestCase):
    """config/<env>.yaml carry every value of the Python service's file of the same name
    (tests/fixtures/original-config/, copied from its public repository), ciphertexts
    byte for byte; keys of our own (LOG_LEVEL) may be added."""

    ADDED = {"devel": {}, "qa": {"LOG_LEVEL": "info"}, "production": {"LOG_LEVEL": "info"}}

    def test_every_value_of_the_python_service_is_carried_as_written(self) -> None:
        for env in ENVIRONMENTS:
            ours, original = scalars(REPO / "config" / f"{env}.yaml"), scalars(ORIGINAL / f"{env}.yaml")
            self.assertEqual(set(ours), {"PLAINTEXT_VARIABLES", "ENCRYPTED_VARIABLES"}, env)
            for section in ("PLAINTEXT_VARIABLES", "ENCRYPTED_VARIABLES"):
                for name, value in original[section].items():
                    self.assertEqual(ours[section].get(name), value, f"{env}: {section}.{name}")
            extra = {k: v for k, v in ours["PLAINTEXT_VARIABLES"].items() if k not in original["PLAINTEXT_VARIABLES"]}
            self.assertEqual(extra, self.ADDED[env], f"{env}: plain-text keys of our own")
            self.assertEqual(set(ours["ENCRYPTED_VARIABLES"]), set(original["ENCRYPTED_VARIABLES"]), env)

    def test_the_python_values_are_the_deployment_the_switch_takes_over(self) -> None:
        # What the switch relies on, written out (the fixtures could drift too).
        for env, redshift, bucket, host in (
            ("qa", "qa", "bic-poller-states-qa", "qa-platform.nypl.org"),
            ("production", "production", "bic-poller-states-production", "platform.nypl.org"),
        ):
            plain = scalars(REPO / "config" / f"{env}.yaml")["PLAINTEXT_VARIABLES"]
            self.assertEqual(plain["S3_BUCKET"], bucket)
            self.assertEqual(plain["S3_RESOURCE"], "pc_reserve_poller_state.json")
            self.assertEqual(plain["REDSHIFT_DB_NAME"], redshift)
            self.assertEqual(plain["PC_RESERVE_SCHEMA_URL"], f"https://{host}/api/v0.1/current-schemas/PcReserve")
            self.assertEqual((plain["KINESIS_BATCH_SIZE"], plain["ENVISIONWARE_BATCH_SIZE"]), ("500", "10000"))
            self.assertEqual((plain["SIERRA_DB_PORT"], plain["ENVISIONWARE_DB_PORT"]), ("1032", "3306"))
        devel = scalars(REPO / "config" / "devel.yaml")["PLAINTEXT_VARIABLES"]
        self.assertEqual((devel["IGNORE_CACHE"], devel["IGNORE_KINESIS"]), ("True", "True"))

    def test_every_key_is_one_the_program_reads(self) -> None:
        known = known_variables()
        self.assertIn("BCRYPT_SALT", known)
        for env in ENVIRONMENTS:
            for path in (REPO / "config" / f"{env}.yaml", ORIGINAL / f"{env}.yaml"):
                doc = scalars(path)
                for section in ("PLAINTEXT_VARIABLES", "ENCRYPTED_VARIABLES"):
                    unknown = set(doc[section]) - known
                    self.assertEqual(unknown, set(), f"{path.relative_to(REPO)}: {section}")

    def test_every_encrypted_value_is_a_kms_ciphertext_under_one_key(self) -> None:
        for env in ENVIRONMENTS:
            encrypted = scalars(REPO / "config" / f"{env}.yaml")["ENCRYPTED_VARIABLES"]
            self.assertGreaterEqual(len(encrypted), 11, env)
            keys = {kms_envelope(f"{env}: {name}", value) for name, value in encrypted.items()}
            self.assertEqual(len(keys), 1, f"{env}: the values are under {len(keys)} keys")

    def test_the_envelope_check_refuses_what_is_not_a_ciphertext(self) -> None:
        good = scalars(ORIGINAL / "qa.yaml")["ENCRYPTED_VARIABLES"]["BCRYPT_SALT"]
        blob = bytearray(base64.b64decode(good))
        kms_envelope("good", good)
        broken = {
            "placeholder": "<KMS ciphertext of the bcrypt salt>",
            "not base64": "AQECAHh7 ea2t",
            "plain text": base64.b64encode(b"$2b$10$" + b"a" * 150).decode(),
            "truncated": base64.b64encode(bytes(blob[:-1])).decode(),
            "version": base64.b64encode(b"\x02" + bytes(blob[1:])).decode(),
            "other algorithm": base64.b64encode(bytes(blob).replace(OID_AES_256_GCM, OID_DATA)).decode(),
        }
        for what, text in broken.items():
            with self.assertRaises(AssertionError, msg=what):
                kms_envelope(what, text)


class ImageDefaults(unittest.TestCase):
    """The image's last stage keeps the Python image's working directory (/src), so a task
    definition naming it keeps working, and emits the EMF run metrics by default."""

    def test_the_final_stage_runs_from_src_with_emf_metrics(self) -> None:
        text = (REPO / "Dockerfile").read_text()
        final = text[text.rindex("\nFROM ") :]
        instructions = [line for line in final.splitlines() if line and not line.startswith("#")]
        self.assertIn("WORKDIR /src", instructions)
        self.assertIn("COPY --from=build /out/pc-reserve-poller /src/pc-reserve-poller", instructions)
        self.assertIn("COPY config/devel.yaml config/qa.yaml config/production.yaml /src/config/", instructions)
        self.assertIn('ENTRYPOINT ["/src/pc-reserve-poller"]', instructions)
        self.assertEqual(instructions[-1], 'CMD ["run", "--metrics", "emf"]')
        self.assertFalse([line for line in instructions if line.startswith("ENV ")], "ENVIRONMENT alone selects")


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=1).result.wasSuccessful() else 1)
