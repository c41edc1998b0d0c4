"""The Open Inference Protocol's REST API in the gateway's OpenAPI document.

The protocol's JSON is not protobuf's JSON mapping, so these paths and schemas are
written out here, after the protocol's own ``open_inference_rest.yaml``, rather than
generated from the gRPC descriptors.  The examples infer with the ``iris`` demo model; the
repository's load and unload examples take part in the story of ``regserve.server.gateway.openapi``
(load promotes v1, which already serves; unload freezes v2, which the Train example made).
"""

from __future__ import annotations

from typing import Any

from regserve.server.gateway.v2 import v2_http_routes

__all__ = ["add_v2_paths"]

TAG = "OpenInferenceProtocol"

_REF = "#/components/schemas/"
_PARAMETERS = {
    "type": "object",
    "description": "Name/value pairs; a value is a string, a number or a boolean.",
    "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
}
_SHAPE = {"type": "array", "items": {"type": "integer", "format": "int64"}}
_TENSOR_DATA = {
    "type": "array",
    "description": "The elements in row-major order, flat or nested as the shape.",
    "items": {},
}
_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
_DATATYPES += ["FP16", "FP32", "FP64", "BYTES"]

SCHEMAS: dict[str, dict[str, Any]] = {
    "v2.Parameters": _PARAMETERS,
    "v2.MetadataServerResponse": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "v2.MetadataTensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": _DATATYPES},
            "shape": {**_SHAPE, "description": "-1 for a dimension of any size (the rows)."},
        },
    },
    "v2.MetadataModelResponse": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": _REF + "v2.MetadataTensor"}},
            "outputs": {"type": "array", "items": {"$ref": _REF + "v2.MetadataTensor"}},
            "properties": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "v2.RequestInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "description": "`inputs` for [rows, features], or a feature's name."},
            "shape": _SHAPE,
            "datatype": {"type": "string", "enum": _DATATYPES},
            "parameters": {
                "allOf": [{"$ref": _REF + "v2.Parameters"}],
                "description": "`binary_data_size`: the input's bytes follow the JSON header (binary extension).",
            },
            "data": _TENSOR_DATA,
        },
    },
    "v2.RequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "parameters": {
                "allOf": [{"$ref": _REF + "v2.Parameters"}],
                "description": "`binary_data`: true answers the output as raw bytes after the JSON header.",
            },
        },
    },
    "v2.InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "allOf": [{"$ref": _REF + "v2.Parameters"}],
                "description": "`routing_key` picks a traffic split's arm; `binary_data_output`: every output binary.",
            },
            "inputs": {"type": "array", "items": {"$ref": _REF + "v2.RequestInput"}},
            "outputs": {"type": "array", "items": {"$ref": _REF + "v2.RequestOutput"}},
        },
    },
    "v2.ResponseOutput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": _SHAPE,
            "datatype": {"type": "string", "enum": _DATATYPES},
            "parameters": {"$ref": _REF + "v2.Parameters"},
            "data": _TENSOR_DATA,
        },
    },
    "v2.InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"$ref": _REF + "v2.Parameters"},
            "outputs": {"type": "array", "items": {"$ref": _REF + "v2.ResponseOutput"}},
        },
    },
    "v2.Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, for a human."},
            "reason": {"type": "string", "description": "regserve's UPPER_SNAKE reason, for a program."},
        },
    },
    "v2.RepositoryIndexRequest": {
        "type": "object",
        "properties": {"ready": {"type": "boolean", "description": "List only the versions that can answer."}},
    },
    "v2.RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
                "reason": {"type": "string"},
            },
        },
    },
    "v2.RepositoryModelRequest": {
        "type": "object",
        "properties": {
            "parameters": {
                "allOf": [{"$ref": _REF + "v2.Parameters"}],
                "description": "`version`: the version to load (promote) or to unload (freeze).",
            }
        },
    },
    "v2.Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
    "v2.Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    "v2.ModelReady": {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
}

IRIS_REQUEST = {
    "id": "42",
    "inputs": [
        {"name": "inputs", "shape": [2, 4], "datatype": "FP64", "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    ],
    "outputs": [{"name": "labels"}, {"name": "probabilities"}],
}
"""An infer request for the ``iris`` demo model: two flowers, two of its outputs."""

_SUMMARIES = {
    "ServerMetadata": ("Server metadata: name, version, extensions.", "v2.MetadataServerResponse"),
    "ServerLive": ("Server live: 200 when the server answers, 400 when not.", "v2.Live"),
    "ServerReady": ("Server ready: 200 once a model is served, 400 before and while draining.", "v2.Ready"),
    "ModelReady": ("Model ready: 200 when the model (at the version) can answer, 400 when not.", "v2.ModelReady"),
    "ModelMetadata": ("Model metadata: inputs and outputs with datatypes and shapes.", "v2.MetadataModelResponse"),
    "ModelInfer": ("Inference: tensors in, tensors out.", "v2.InferenceResponse"),
    "RepositoryIndex": (
        "Repository index: every stored version, READY or UNAVAILABLE with a reason.",
        "v2.RepositoryIndex",
    ),
    "RepositoryModelLoad": ("Load: re-read the registry; with a `version` parameter, promote that version.", ""),
    "RepositoryModelUnload": ("Unload one version (the `version` parameter): freeze it.", ""),
}
_REPOSITORY_BODIES = {
    "RepositoryIndex": ("v2.RepositoryIndexRequest", {"ready": True}),
    "RepositoryModelLoad": ("v2.RepositoryModelRequest", {"parameters": {"version": "v1"}}),
    "RepositoryModelUnload": ("v2.RepositoryModelRequest", {"parameters": {"version": "v2"}}),
}
"""The body schema and example of each repository route."""


_READINESS = {
    "ServerLive": {"live": False},
    "ServerReady": {"ready": False},
    "ModelReady": {"name": "iris", "ready": False},
}
"""The 400 answer of each health route: its own body, saying no."""


def _operation(route) -> dict[str, Any]:
    rpc = route.method.name
    summary, answer = _SUMMARIES[rpc]
    ok_content: dict[str, Any] = {"application/json": {"schema": {"$ref": _REF + answer}}} if answer else {}
    operation: dict[str, Any] = {
        "operationId": f"v2_{rpc}" + ("_version" if "version" in route.path.template else ""),
        "tags": [TAG],
        "summary": summary,
        "description": f"Calls inference.GRPCInferenceService/{rpc}; the same checks and errors as over gRPC.",
    }
    parameters = [
        {
            "name": variable,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "example": "iris" if "name" in variable else "1",
            "description": "The model's name." if "name" in variable else "A version: `3` or `v3`.",
        }
        for variable in route.path.variables
    ]
    if parameters:
        operation["parameters"] = parameters
    if rpc == "ModelInfer":
        ok_content["application/octet-stream"] = {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "With binary outputs: the JSON header (Inference-Header-Content-Length bytes), "
                "then their bytes.",
            }
        }
        operation["requestBody"] = {
            "required": True,
            "description": "The request as JSON; with the binary tensor data extension, the JSON header "
            "(its length in the Inference-Header-Content-Length header) followed by the inputs' bytes.",
            "content": {
                "application/json": {"schema": {"$ref": _REF + "v2.InferenceRequest"}, "example": IRIS_REQUEST},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
        operation["parameters"] = [
            *operation["parameters"],
            {
                "name": "Inference-Header-Content-Length",
                "in": "header",
                "required": False,
                "schema": {"type": "integer"},
                "description": "The length of the JSON part of a body that binary tensor data follows.",
            },
        ]
    if rpc in _REPOSITORY_BODIES:
        schema, example = _REPOSITORY_BODIES[rpc]
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": _REF + schema}, "example": example}},
        }
    error = {"description": "The error.", "content": {"application/json": {"schema": {"$ref": _REF + "v2.Error"}}}}
    ok: dict[str, Any] = {"description": summary}
    if ok_content:
        ok["content"] = ok_content
    operation["responses"] = {"200": ok, "default": error}
    if rpc in _READINESS:
        # Not ready is an answer in the ready body, not an error.
        not_ready = {"application/json": {"schema": {"$ref": _REF + answer}, "example": _READINESS[rpc]}}
        operation["responses"]["400"] = {"description": "Not ready.", "content": not_ready}
    return operation


def add_v2_paths(document: dict[str, Any]) -> dict[str, Any]:
    """Add the protocol's paths, tag and schemas to the gateway's OpenAPI ``document``; return it."""
    paths = document.setdefault("paths", {})
    for route in v2_http_routes():
        paths.setdefault(route.path.openapi_path, {})[route.http_method.lower()] = _operation(route)
    document.setdefault("tags", []).append(
        {
            "name": TAG,
            "description": "The Open Inference Protocol (KServe v2) REST API, as Triton, MLServer and KServe serve it. "
            'Errors are {"error": ...} objects.',
        }
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(SCHEMAS)
    return document
