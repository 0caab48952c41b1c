"""docker/compose.yaml is a valid Compose file. No Docker engine runs here (and the Compose plugin may
be missing), so the file is checked against the Compose specification's JSON schema (the copy that
check-jsonschema ships) plus what a schema cannot see; `docker compose config` runs where it can."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
ENV = {"FLOWER_BASIC_AUTH": "admin:secret"}


def compose_schema() -> dict:
    return json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())


def compose_errors(document: dict) -> list[str]:
    """Schema violations, then references the schema cannot check."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    services = document.get("services", {})
    volumes = set(document.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else list(depends):
            if dependency not in services:
                errors.append(f"services/{name}/depends_on: no service {dependency!r}")
        build = service.get("build")
        if isinstance(build, dict):
            context = (COMPOSE.parent / build.get("context", ".")).resolve()
            if not (context / build.get("dockerfile", "Dockerfile")).is_file():
                errors.append(f"services/{name}/build: {build.get('dockerfile')} not found under {context}")
        for mount in service.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source")
            if source and not source.startswith((".", "/", "~")) and source not in volumes:
                errors.append(f"services/{name}/volumes: named volume {source!r} is not declared")
        if not service.get("image") and not build:
            errors.append(f"services/{name}: neither image nor build")
    return errors


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid():
    document = load()
    assert compose_errors(document) == []
    assert {"postgres", "redis", "sglang", "generate", "clean", "build", "evaluate", "reconciler", "flower", "metrics"} <= set(document["services"])
    assert "FLOWER_BASIC_AUTH" in document["services"]["flower"]["environment"]
    assert "FLOWER_UNAUTHENTICATED_API" not in COMPOSE.read_text()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["services"]["clean"].update(restart_policy="always"), "restart_policy"),
        (lambda d: d["services"]["clean"].update(depends_on=["redis", "rabbitmq"]), "rabbitmq"),
        (lambda d: d["services"]["clean"]["build"].update(dockerfile="docker/missing.Dockerfile"), "missing.Dockerfile"),
        (lambda d: d["services"]["postgres"].update(volumes=["pgdatas:/var/lib/postgresql/data"]), "pgdatas"),
        (lambda d: d["services"]["redis"].update(ports="6379"), "ports"),
    ],
)
def test_the_check_catches_broken_files(mutate, message):
    document = copy.deepcopy(load())
    mutate(document)
    assert any(message in error for error in compose_errors(document))


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed (the schema check above stands in)")
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, env={**ENV, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
