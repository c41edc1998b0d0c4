"""deploy/kserve: valid against the Kubernetes and KServe schemas offline, and wired to what regserve serves.

The Kubernetes parts (the runtime's container and volumes, the metadata) are checked
against the strict schemas kubernetes-validate ships; the KServe resources against
the models of the KServe SDK (PyPI ``kserve``, generated from KServe's OpenAPI
schema), which needs protobuf < 7 and so lives in .venv-oip beside tritonclient
(tests/oip/requirements.txt, made by ``make test``): ``kserve_models.py`` runs there.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from regserve.server.cli.parser import build_parser
from regserve.server.config import Settings
from regserve.server.rpc.methods import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
CHECK = Path(__file__).with_name("kserve_models.py")
KSERVE_PYTHON = os.environ.get("REGSERVE_OIP_PYTHON", str(ROOT / ".venv-oip" / "bin" / "python"))
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
SETTING_NAMES = {f"REGSERVE_{f.name.upper()}" for f in fields(Settings)}


def _resources() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if doc]


def _one(kind: str) -> dict:
    (found,) = [r for r in _resources() if r["kind"] == kind]
    return found


def _container() -> dict:
    (container,) = _one("ServingRuntime")["spec"]["containers"]
    return container


def _kubernetes_errors(value: object, schema_name: str, version: str) -> list[str]:
    """What the strict Kubernetes schema ``schema_name`` (such as ``container-v1``) finds wrong with ``value``."""
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{directory}/{schema_name}.json", version)
    definitions = schema_contents(f"{directory}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(value)]


def _kserve_errors(resources: list[dict]) -> list[str]:
    if not Path(KSERVE_PYTHON).exists():
        pytest.skip(f"no interpreter with the KServe SDK at {KSERVE_PYTHON}; `make test` creates .venv-oip")
    done = subprocess.run(
        [KSERVE_PYTHON, str(CHECK)], input=json.dumps(resources), capture_output=True, text=True, timeout=120
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


# Schemas


def test_the_resources_match_the_kserve_sdks_models():
    assert _kserve_errors(_resources()) == []


def test_the_kserve_check_finds_a_misspelled_field_a_wrong_type_and_a_missing_name():
    broken = copy.deepcopy(_resources())
    broken[1]["spec"]["predictor"]["model"]["protocolversion"] = "v2"
    broken[0]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    del broken[0]["spec"]["containers"][0]["name"]
    errors = "\n".join(_kserve_errors(broken))
    assert "V1beta1ModelSpec has no field 'protocolversion'" in errors
    assert "ports[0].containerPort: expected int" in errors
    assert "name" in errors and "Field required" in errors


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kubernetes_parts_are_valid_against_the_strict_schemas(version):
    runtime = _one("ServingRuntime")
    for resource in _resources():
        assert _kubernetes_errors(resource["metadata"], "objectmeta-meta-v1", version) == []
    assert _kubernetes_errors(_container(), "container-v1", version) == []
    for volume in runtime["spec"]["volumes"]:
        assert _kubernetes_errors(volume, "volume-v1", version) == []
    assert _kubernetes_errors({**_container(), "port": 8080}, "container-v1", version) != []


# What KServe and regserve read


def test_the_inference_service_runs_the_runtime_with_the_v2_protocol():
    runtime, service = _one("ServingRuntime"), _one("InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2"
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    # Knative gives a container one port; both of regserve's need a raw Deployment.
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_the_ports_are_named_as_kserve_expects_and_are_regserves():
    container = _container()
    args = build_parser().parse_args(["serve", *container["args"]])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http1": args.gateway_port, "h2c": args.port}
    assert container["ports"][0]["name"] == "http1"  # the port the InferenceService's URL reaches
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc_probe = container[probe]["grpc"]
        assert grpc_probe["port"] == args.port
        assert grpc_probe["service"] in ("", *SERVICE_NAMES), probe
    assert container["readinessProbe"]["grpc"]["service"] == "inference.GRPCInferenceService"


def test_every_regserve_variable_is_a_setting_and_the_root_filesystem_stays_read_only():
    container = _container()
    for variable in container["env"]:
        if variable["name"].startswith("REGSERVE_"):
            assert variable["name"] in SETTING_NAMES, variable["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsUser"] == 10001
    mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
    spool = next(v["value"] for v in container["env"] if v["name"] == "REGSERVE_SPOOL_DIR")
    assert {"/tmp", spool} <= mounted


def test_the_pod_gets_no_service_links_and_trains_below_its_memory_limit():
    # A Service named regserve would otherwise set REGSERVE_PORT=tcp://..., which `regserve health` reads.
    assert _one("InferenceService")["spec"]["predictor"]["enableServiceLinks"] is False
    env = {variable["name"]: variable.get("value") for variable in _container()["env"]}
    assert "AWS_DEFAULT_REGION" in env and "AWS_REGION" not in env
    limit_mib = int(_container()["resources"]["limits"]["memory"].removesuffix("Gi")) * 1024
    assert int(env["REGSERVE_MAX_TRAIN_MEMORY_MB"]) < limit_mib
