"""The OpenAPI 3 document of the REST gateway, generated from the contract's descriptors.

Paths come from the same ``HttpRoute`` table the gateway serves; schemas follow
protobuf's JSON mapping (lowerCamelCase names, 64-bit integers as strings, enums by
name, Timestamp as RFC 3339); descriptions are the proto comments, read from the
descriptor set with source info that ``make generate`` ships beside the stubs
(``regserve_v1.binpb``), because the descriptors compiled into ``*_pb2`` carry none.

Every operation has an example that succeeds against the demo models, so "Try it out"
in Swagger UI works as shown: without one, Swagger UI fills every field of the schema
(both ``inputs`` and ``namedInputs``, which Predict refuses) and pretty-prints NDJSON.
NDJSON request bodies are declared as ``application/x-NDJSON`` (``NDJSON_REQUEST``).
The examples tell one story on ``iris``, each succeeding once in this order: train a
second version without promoting it, create a third from fitted parameters without promoting
it, read, split traffic between v1 and v2, promote v2 (which ends the split), roll back to v1,
freeze and unfreeze v2, and delete it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from importlib import resources
from typing import cast

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.rpc import status_pb2

from regserve.server.gateway.rules import HttpRoute, resolve_field_path

__all__ = ["EXAMPLES", "NDJSON_REQUEST", "load_comments", "openapi_document"]

logger = logging.getLogger(__name__)

DESCRIPTOR_SET = ("regserve.v1", "regserve_v1.binpb")

_STRING_INTEGERS = {
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_SINT64: "int64",
    FieldDescriptor.TYPE_SFIXED64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_FIXED64: "uint64",
}
_INTEGERS = {
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_SINT32: "int32",
    FieldDescriptor.TYPE_SFIXED32: "int32",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_FIXED32: "uint32",
}
_WELL_KNOWN: dict[str, dict] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "The type URL of the packed message."}},
        "additionalProperties": True,
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.Empty": {"type": "object"},
}
NDJSON_REQUEST = "application/x-NDJSON"
"""The NDJSON request media type as the document spells it: media types ignore case (RFC 9110), but Swagger UI
JSON-quotes a string example of any media type whose name contains a lower-case "json", so NDJSON would be sent
as one JSON string; spelled so, the example is shown and sent as written, and the gateway reads it as
application/x-ndjson."""

_IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
_TWO_FLOWERS = {"numColumns": 4, "values": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}
_TRAIN_SPEC = {
    "spec": {
        "model": "iris",
        "kind": "MODEL_KIND_LOGISTIC",
        "featureNames": _IRIS_FEATURES,
        "standardize": True,
        "alpha": 0.01,
        "promote": False,
    }
}
_TRAIN_CHUNK = {
    "chunk": {
        "features": {
            "numColumns": 4,
            "values": [
                *(5.1, 3.5, 1.4, 0.2, 4.9, 3.0, 1.4, 0.2, 4.7, 3.2, 1.3, 0.2),
                *(7.0, 3.2, 4.7, 1.4, 6.4, 3.2, 4.5, 1.5, 6.9, 3.1, 4.9, 1.5),
                *(6.3, 3.3, 6.0, 2.5, 5.8, 2.7, 5.1, 1.9, 7.1, 3.0, 5.9, 2.1),
            ],
        },
        "labels": [*["setosa"] * 3, *["versicolor"] * 3, *["virginica"] * 3],
    }
}


def _ndjson(*lines: dict) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


EXAMPLES: dict[str, dict] = {
    "RegressionService.Train": {"body": _ndjson(_TRAIN_SPEC, _TRAIN_CHUNK)},
    "RegressionService.Predict": {"path": {"model": "iris"}, "body": {"inputs": _TWO_FLOWERS}},
    "RegressionService.BatchPredict": {
        "path": {"model": "iris"},
        "body": _ndjson({"inputs": _TWO_FLOWERS}, {"inputs": {"numColumns": 4, "values": [6.3, 3.3, 6.0, 2.5]}}),
    },
    "RegressionService.ModelInfo": {"path": {"model": "iris"}},
    "ModelService.ListModels": {},
    "ModelService.ListVersions": {"path": {"model": "iris"}},
    "ModelService.GetVersion": {"path": {"model": "iris", "version": "v1"}},
    "ModelService.CreateVersion": {
        "path": {"model": "iris"},
        "body": {
            "kind": "MODEL_KIND_LOGISTIC",
            "featureNames": _IRIS_FEATURES,
            "classes": ["setosa", "versicolor", "virginica"],
            "coefficients": {
                "numColumns": 4,
                "values": [*(-0.4, 0.9, -2.3, -1.0), *(0.5, -0.3, -0.2, -0.8), *(-0.1, -0.6, 2.5, 1.8)],
            },
            "intercepts": [9.8, 2.2, -12.0],
            "lineage": {"source": "fitted by scikit-learn on the iris data"},
            "promote": False,
        },
    },
    "ModelService.PromoteVersion": {
        "path": {"model": "iris", "version": "v2"},
        "body": {"reason": "v2 trained on the new flowers"},
    },
    "ModelService.RollbackModel": {"path": {"model": "iris"}, "body": {"reason": "v2 answers worse than v1"}},
    "ModelService.FreezeVersion": {"path": {"model": "iris", "version": "v2"}, "body": {"reason": "under review"}},
    "ModelService.UnfreezeVersion": {"path": {"model": "iris", "version": "v2"}, "body": {"reason": "reviewed"}},
    "ModelService.SetTrafficSplit": {
        "path": {"model": "iris"},
        "body": {"weights": {"v1": 0.9, "v2": 0.1}, "reason": "try v2 on a tenth of the traffic"},
    },
    "ModelService.DeleteVersion": {"path": {"model": "iris", "version": "v2"}, "query": {"reason": "not needed"}},
    "ModelService.GetStatus": {"path": {"model": "iris"}},
}
"""The example of each method's routes, by ``Service.Method``: path variables, query parameters, the body."""

# types-protobuf types ``Message.DESCRIPTOR`` as either backend's class; both are a ``Descriptor``.
_STATUS_DESCRIPTOR = cast(Descriptor, status_pb2.Status.DESCRIPTOR)
_STATUS = _STATUS_DESCRIPTOR.full_name


def load_comments(package: str = DESCRIPTOR_SET[0], name: str = DESCRIPTOR_SET[1]) -> dict[str, str]:
    """The leading comment of every message, field, enum, value, service and method, by full name."""
    try:
        data = (resources.files(package) / name).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        logger.warning("no %s in %s; the OpenAPI document will have no descriptions", name, package)
        return {}
    comments: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        by_path = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        prefix = f"{file.package}." if file.package else ""

        def add(full_name: str, path: tuple[int, ...], by_path=by_path) -> None:
            text = " ".join(line.strip() for line in by_path.get(path, "").strip().splitlines())
            if text:
                comments[full_name] = text

        def walk_message(message, name: str, path: tuple[int, ...], add=add) -> None:
            add(name, path)
            for i, field in enumerate(message.field):
                add(f"{name}.{field.name}", (*path, 2, i))
            for i, nested in enumerate(message.nested_type):
                walk_message(nested, f"{name}.{nested.name}", (*path, 3, i))
            for i, enum in enumerate(message.enum_type):
                walk_enum(enum, f"{name}.{enum.name}", (*path, 4, i))

        def walk_enum(enum, name: str, path: tuple[int, ...], add=add) -> None:
            add(name, path)
            for i, value in enumerate(enum.value):
                add(f"{name}.{value.name}", (*path, 2, i))

        for i, message in enumerate(file.message_type):
            walk_message(message, prefix + message.name, (4, i))
        for i, enum in enumerate(file.enum_type):
            walk_enum(enum, prefix + enum.name, (5, i))
        for i, service in enumerate(file.service):
            add(prefix + service.name, (6, i))
            for j, method in enumerate(service.method):
                add(f"{prefix}{service.name}.{method.name}", (6, i, 2, j))
    return comments


class _Schemas:
    """The ``components/schemas`` of the document, filled as messages and enums are referenced."""

    def __init__(self, comments: dict[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, dict] = {}

    def ref(self, descriptor: Descriptor | EnumDescriptor) -> dict:
        name = descriptor.full_name
        if name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # reserve the name first: messages may refer to themselves
            if isinstance(descriptor, EnumDescriptor):
                self.schemas[name] = self._enum(descriptor)
            else:
                self.schemas[name] = self._message(descriptor)
        return {"$ref": f"#/components/schemas/{name}"}

    def _described(self, schema: dict, description: str | None) -> dict:
        if not description:
            return schema
        if "$ref" in schema:  # OpenAPI 3.0 ignores siblings of $ref
            return {"allOf": [schema], "description": description}
        return {**schema, "description": description}

    def _enum(self, enum: EnumDescriptor) -> dict:
        lines = [self.comments.get(enum.full_name, "")]
        lines += [f"- `{v.name}`: {self.comments.get(f'{enum.full_name}.{v.name}', '')}" for v in enum.values]
        return {"type": "string", "enum": [v.name for v in enum.values], "description": "\n".join(lines).strip()}

    def _message(self, message: Descriptor) -> dict:
        properties = {
            field.json_name: self.field(field, self.comments.get(f"{message.full_name}.{field.name}"))
            for field in message.fields
        }
        schema = {"type": "object", "properties": properties}
        if message.full_name in self.comments:
            schema["description"] = self.comments[message.full_name]
        return schema

    def field(self, field: FieldDescriptor, description: str | None = None) -> dict:
        """The schema of one field's JSON value."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return self._described({"type": "object", "additionalProperties": self.scalar(value)}, description)
        schema = self.scalar(field)
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        return self._described(schema, description)

    def scalar(self, field: FieldDescriptor) -> dict:
        """The schema of one element of a field, ignoring whether it is repeated."""
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            return self.ref(field.message_type)
        if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            return self.ref(field.enum_type)
        if kind in _STRING_INTEGERS:
            return {"type": "string", "format": _STRING_INTEGERS[kind]}
        if kind in _INTEGERS:
            return {"type": "integer", "format": _INTEGERS[kind]}
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return {"type": "number", "format": "double"}
        if kind == FieldDescriptor.TYPE_FLOAT:
            return {"type": "number", "format": "float"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return {"type": "string"}


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + ("." if dot else "")


def _operation(route: HttpRoute, schemas: _Schemas) -> dict:
    method = route.method
    request = method.input_type
    comment = schemas.comments.get(method.full_name, "")
    operation_id = f"{method.containing_service.name}_{method.name}" + (str(route.binding + 1) if route.binding else "")
    example = EXAMPLES.get(f"{method.containing_service.name}.{method.name}", {})
    operation: dict = {"operationId": operation_id, "tags": [method.containing_service.name]}
    if comment:
        operation["summary"] = _first_sentence(comment)
        operation["description"] = comment
    parameters = []
    for variable in route.path.variables:
        field = resolve_field_path(request, variable)[-1]
        parameters.append(
            {
                "name": variable,
                "in": "path",
                "required": True,
                "schema": schemas.scalar(field),
                "description": schemas.comments.get(field.full_name, ""),
                **({"example": example["path"][variable]} if variable in example.get("path", {}) else {}),
            }
        )
    bound = {variable.split(".")[0] for variable in route.path.variables} | {route.body}
    if route.body != "*" and not method.client_streaming:
        for field in request.fields:
            if field.name in bound or field.type == FieldDescriptor.TYPE_MESSAGE:
                continue
            parameters.append(
                {
                    "name": field.json_name,
                    "in": "query",
                    "required": False,
                    "schema": schemas.field(field),
                    "description": schemas.comments.get(field.full_name, ""),
                    **(
                        {"example": example["query"][field.json_name]}
                        if field.json_name in example.get("query", {})
                        else {}
                    ),
                }
            )
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        body_schema = (
            schemas.ref(request) if route.body == "*" else schemas.field(resolve_field_path(request, route.body)[-1])
        )
        if method.client_streaming:
            content = {NDJSON_REQUEST: {"schema": body_schema}}
            text = f"Newline-delimited JSON (application/x-ndjson): one {request.name} per line."
        else:
            content = {"application/json": {"schema": body_schema}}
            text = f"The {request.name}" + ("; path variables override the body." if route.path.variables else ".")
        if "body" in example:
            next(iter(content.values()))["example"] = example["body"]
        operation["requestBody"] = {"required": True, "description": text, "content": content}
    response = method.output_type
    result = schemas.ref(response)
    if route.response_body:
        result = schemas.field(resolve_field_path(response, route.response_body)[-1])
    if method.server_streaming:
        line = {
            "type": "object",
            "description": f'One line per {response.name}: {{"result": ...}}, or a last {{"error": Status}} line.',
            "properties": {"result": result, "error": schemas.ref(_STATUS_DESCRIPTOR)},
        }
        ok = {
            "description": "A stream of results, one JSON object per line.",
            "content": {"application/x-ndjson": {"schema": line}},
        }
    else:
        ok = {"description": f"The {response.name}.", "content": {"application/json": {"schema": result}}}
    error = {
        "description": "The error, as a google.rpc.Status in JSON.",
        "content": {"application/json": {"schema": schemas.ref(_STATUS_DESCRIPTOR)}},
    }
    operation["responses"] = {"200": ok, "default": error}
    return operation


def openapi_document(routes: Iterable[HttpRoute], *, title: str, version: str, comments: dict[str, str]) -> dict:
    """The OpenAPI 3.0 document describing ``routes``."""
    routes = list(routes)
    schemas = _Schemas(comments)
    paths: dict[str, dict] = {}
    tags: dict[str, dict] = {}
    for route in routes:
        service = route.method.containing_service
        tags.setdefault(service.name, {"name": service.name, "description": comments.get(service.full_name, "")})
        paths.setdefault(route.path.openapi_path, {})[route.http_method.lower()] = _operation(route, schemas)
    schemas.ref(_STATUS_DESCRIPTOR)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "The REST/JSON face of the regserve gRPC API, generated from its google.api.http rules. "
            "Errors are google.rpc.Status objects; streams are newline-delimited JSON.",
        },
        "tags": list(tags.values()),
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.schemas.items()))},
    }
