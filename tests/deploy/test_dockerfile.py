"""The Dockerfile, read as text (no container engine is needed): numeric user, health check from the environment.

What the HEALTHCHECK command does with those variables is tested against real servers in
tests/server/cli/test_health.py.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from regserve.server.cli.parser import health_defaults

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def _runtime_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    return instructions[last_from:]


def _one(instruction: str) -> str:
    (arguments,) = [a for i, a in _runtime_stage() if i == instruction]
    return arguments


def _environment() -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(_one("ENV")))


def _pod_user() -> int:
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text(encoding="utf-8"))
    return deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]


def test_the_user_is_numeric_and_the_one_the_pods_run_as():
    user, _, group = _one("USER").partition(":")
    assert user.isdigit() and group.isdigit()
    assert int(user) == int(group) == _pod_user() != 0


def test_the_health_check_takes_the_server_from_the_environment():
    check = _one("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + len("CMD") :])
    assert command == ["regserve", "health"]
    timeout = float(re.search(r"--timeout=(\d+)s", check).group(1))
    assert timeout > 3.0  # the command's own deadline, plus the interpreter's start
    # With the image's own variables the check calls the port the server binds, on loopback.
    environment = _environment()
    assert health_defaults(environment)["server"] == f"127.0.0.1:{environment['REGSERVE_PORT']}"
    assert environment["REGSERVE_PORT"] in _one("EXPOSE").split()


def test_the_image_reads_a_registry_on_object_storage():
    builds = [a for i, a in _instructions() if i == "RUN" and "pip wheel" in a]
    assert len(builds) == 1 and '".[s3]"' in builds[0]
