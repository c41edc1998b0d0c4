"""Every example of /openapi.json, sent as Swagger UI's "Try it out" sends it, succeeds against the demo models.

A real server with the demo models behind a real gateway (over gRPC, and in process as inside
``regserve serve``); each operation's path and query examples and its body example are sent
over HTTP, in the order of the story the examples tell (``regserve.server.gateway.openapi``).
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from regserve.server.config import Settings
from regserve.server.datasets.demo import ensure_demo_models
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.runtime.application import create_server
from tests.server.gateway.helpers import MODES, running_gateway

STORY = (
    "RegressionService_Train",
    "ModelService_CreateVersion",
    "RegressionService_Predict",
    "RegressionService_BatchPredict",
    "RegressionService_ModelInfo",
    "ModelService_ListModels",
    "ModelService_ListVersions",
    "ModelService_GetVersion",
    "ModelService_GetStatus",
    "ModelService_GetStatus2",
    "v2_ServerMetadata",
    "v2_ServerLive",
    "v2_ServerReady",
    "v2_ModelMetadata",
    "v2_ModelMetadata_version",
    "v2_ModelReady",
    "v2_ModelReady_version",
    "v2_ModelInfer",
    "v2_ModelInfer_version",
    "v2_RepositoryIndex",
    "ModelService_SetTrafficSplit",
    "ModelService_PromoteVersion",
    "ModelService_RollbackModel",
    "ModelService_FreezeVersion",
    "v2_RepositoryModelUnload",
    "ModelService_UnfreezeVersion",
    "v2_RepositoryModelLoad",
    "ModelService_DeleteVersion",
    "Health_Live",
    "Health_Ready",
)
"""Every operation of the document, in an order in which each example succeeds once."""


@pytest.fixture(params=MODES)
def demo_http(request, tmp_path):
    store = ModelStore(ModelRegistry(tmp_path / "models"))
    store.load_all()
    ensure_demo_models(store, spool_dir=str(tmp_path / "spool"))
    settings = Settings(host="127.0.0.1", port=0, model_dir=tmp_path / "models", demo_models=False)
    app = create_server(settings, store)
    app.start()
    try:
        local = app.local if request.param == "in_process" else None
        with running_gateway(f"127.0.0.1:{app.port}", local) as http:
            yield http
    finally:
        app.stop(0)


def _operations(document: dict) -> dict[str, tuple[str, str, dict]]:
    return {
        operation["operationId"]: (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def example_request(http: httpx.Client, method: str, path: str, operation: dict) -> httpx.Request:
    """The request Swagger UI's "Try it out" makes from the operation's examples."""
    parameters = operation.get("parameters", [])
    values = {p["name"]: p["example"] for p in parameters if p["in"] == "path"}
    url = re.sub(r"\{([^}]+)\}", lambda m: str(values[m.group(1)]), path)
    query = {p["name"]: p["example"] for p in parameters if p["in"] == "query" and "example" in p}
    headers, content = {}, None
    body = operation.get("requestBody")
    if body is not None:
        ((media_type, media),) = [(k, v) for k, v in body["content"].items() if "example" in v]
        example = media["example"]
        content = example if isinstance(example, str) else json.dumps(example)
        headers["content-type"] = media_type
    return http.build_request(method.upper(), url, params=query, headers=headers, content=content)


def test_every_operation_has_examples_for_what_it_needs():
    with running_gateway("127.0.0.1:1") as http:  # the document needs no server behind the gateway
        operations = _operations(http.get("/openapi.json").json())
    assert sorted(operations) == sorted(STORY)
    for name, (_, _, operation) in operations.items():
        for parameter in operation.get("parameters", []):
            assert parameter["in"] != "path" or "example" in parameter, (name, parameter["name"])
        if "requestBody" in operation:
            assert any("example" in media for media in operation["requestBody"]["content"].values()), name


def test_every_example_succeeds_against_the_demo_models(demo_http):
    operations = _operations(demo_http.get("/openapi.json").json())
    assert sorted(operations) == sorted(STORY)
    for name in STORY:
        request = example_request(demo_http, *operations[name])
        response = demo_http.send(request)
        assert 200 <= response.status_code < 300, (name, response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/x-ndjson"):
            lines = [json.loads(line) for line in response.text.splitlines()]
            assert lines and all("result" in line for line in lines), (name, response.text)
    # The story ends where it began, but for v3, created from fitted parameters: v1 of iris serving, v2 gone.
    state = demo_http.get("/v1/models/iris/versions").json()
    assert [v["version"] for v in state["versions"]] == ["v1", "v3"]
