#!/usr/bin/env python3
"""The deployment files name exactly what the Python PcReservePoller's deployment names
(README "Switching from the Python service"), so that switching changes the image and
nothing else: the deploy workflows' trigger, tag prefix, role, ECR repository and tag,
ECS cluster and service; the config templates' non-secret values (cursor bucket and
object, schema URL, ports, database names, batch sizes).

Run by scripts/checks/lint-deploy.sh with the lint venv's Python (ruamel.yaml reads `on:` as
a key, where a YAML 1.1 reader would make it `true`).
"""

from __future__ import annotations

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
        self.assertEqual(wf["permissions"]["id-token"], "write")
        self.assertEqual(wf["env"]["AWS_REGION"], "us-east-1")
        self.assertEqual(wf["env"]["ECR_REPOSITORY"], "pc-reserve-poller")
        self.assertEqual(wf["env"]["IMAGE_TAG"], f"{env}-latest")
        self.assertEqual(wf["env"]["ECS_CLUSTER"], f"pc-reserve-poller-{env}")
        self.assertEqual(wf["env"]["ECS_SERVICE"], f"pc-reserve-poller-app-{env}")
        job = wf["jobs"]["deploy"]
        self.assertEqual(job["if"], f"startsWith(github.event.release.tag_name, '{env}')")
        # The OIDC subject is repo:<owner>/<repo>:environment:<env>, what the role trusts
        # (docs/switch-over.md); production's environment has required reviewers.
        self.assertEqual(job.get("environment"), env)
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


class ConfigTemplates(unittest.TestCase):
    COMMON = {
        "AWS_REGION": "us-east-1",
        "ENVISIONWARE_DB_PORT": "3306",
        "ENVISIONWARE_DB_NAME": "lasttwodays",
        "SIERRA_DB_PORT": "1032",
        "SIERRA_DB_NAME": "iii",
        "S3_RESOURCE": "pc_reserve_poller_state.json",
        "KINESIS_BATCH_SIZE": "500",
        "ENVISIONWARE_BATCH_SIZE": "10000",
    }

    def check(self, env: str, expected: dict[str, str]) -> None:
        config = load(REPO / "config" / f"{env}.yaml")
        plain = {k: str(v) for k, v in config["PLAINTEXT_VARIABLES"].items()}
        for name, value in {**self.COMMON, **expected}.items():
            self.assertEqual(plain.get(name), value, f"{env}: {name}")
        for name, value in plain.items():
            self.assertNotIn("<", value, f"{env}: {name} is still a placeholder")
        for name, value in config["ENCRYPTED_VARIABLES"].items():
            self.assertTrue(str(value).startswith("<"), f"{env}: {name} must stay a placeholder here")

    def test_qa(self) -> None:
        self.check(
            "qa",
            {
                "REDSHIFT_DB_NAME": "qa",
                "S3_BUCKET": "bic-poller-states-qa",
                "PC_RESERVE_SCHEMA_URL": "https://qa-platform.nypl.org/api/v0.1/current-schemas/PcReserve",
            },
        )

    def test_production(self) -> None:
        self.check(
            "production",
            {
                "REDSHIFT_DB_NAME": "production",
                "S3_BUCKET": "bic-poller-states-production",
                "PC_RESERVE_SCHEMA_URL": "https://platform.nypl.org/api/v0.1/current-schemas/PcReserve",
            },
        )


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=1).result.wasSuccessful() else 1)
