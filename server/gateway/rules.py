"""The REST routes of the contract, read from the ``google.api.http`` options of its methods.

Nothing here knows an individual RPC: ``http_routes`` walks the services of the
generated ``regserve.v1`` modules (or any given services) and turns each HTTP rule,
and each of its ``additional_bindings``, into an ``HttpRoute``.  A route pairs a
``PathTemplate`` (the google.api.http template grammar: literals, ``*``, ``**``,
``{field}``, ``{field=pattern/*}`` and a trailing ``:verb``) with the method it calls.

A single-segment variable (``{model}`` or ``*``) matches one path segment without
``/`` or ``:``, so ``/v1/models/house:predict`` can never be read as a model named
``house:predict``; model names and versions contain neither character.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor

__all__ = ["HttpRoute", "PathTemplate", "contract_services", "http_routes", "resolve_field_path"]

_SEGMENT = "[^/:]+"
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


def sent_path(scope: Mapping[str, Any]) -> str:
    """The request's path as the client sent it, percent-encoded (ASGI's ``raw_path``), without the root path.

    Routes match this, not the decoded ``path``, in which ``%2F`` would already be a ``/``.
    """
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


@dataclass(frozen=True)
class PathTemplate:
    """A parsed google.api.http path template.

    ``variables`` are the field paths bound by the template, in order; ``pattern``
    matches a request path in full and names each variable's group ``v0``, ``v1``, ...
    """

    template: str
    pattern: re.Pattern
    variables: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        if not template.startswith("/"):
            raise ValueError(f"path template {template!r} does not start with '/'")
        segments, verb = _split_verb(template[1:])
        variables: list[str] = []
        parts = []
        for segment in _split_top_level(segments, "/"):
            if segment.startswith("{"):
                if not segment.endswith("}"):
                    raise ValueError(f"unbalanced braces in path template {template!r}")
                field, _, sub = segment[1:-1].partition("=")
                if not field:
                    raise ValueError(f"empty variable in path template {template!r}")
                inner = "/".join(_segment_pattern(s, template) for s in sub.split("/")) if sub else _SEGMENT
                parts.append(f"(?P<v{len(variables)}>{inner})")
                variables.append(field)
            else:
                parts.append(_segment_pattern(segment, template))
        pattern = "/" + "/".join(parts) + (":" + re.escape(verb) if verb else "")
        return cls(template, re.compile(pattern), tuple(variables))

    def match(self, path: str) -> dict[str, str] | None:
        """The value of each variable when ``path``, as sent (percent-encoded), matches the template, else None.

        Segments are split before each variable's value is decoded, as grpc-gateway does: an
        encoded ``/`` or ``:`` stays inside its segment instead of making another route's path.
        """
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {name: unquote(found.group(f"v{i}")) for i, name in enumerate(self.variables)}

    @property
    def openapi_path(self) -> str:
        """The template with each ``{field=pattern}`` written as ``{field}``, as OpenAPI paths are."""
        return re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", self.template)


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` outside braces."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _split_verb(text: str) -> tuple[str, str]:
    """Split ``segments:verb`` at the last colon outside braces."""
    parts = _split_top_level(text, ":")
    if len(parts) == 1:
        return text, ""
    return ":".join(parts[:-1]), parts[-1]


def _segment_pattern(segment: str, template: str) -> str:
    if segment == "*":
        return _SEGMENT
    if segment == "**":
        return ".+"
    if not segment or any(c in segment for c in "{}*"):
        raise ValueError(f"bad segment {segment!r} in path template {template!r}")
    return re.escape(segment)


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP binding of one RPC: ``http_method`` on ``path`` calls ``method``.

    ``body`` is the request field the HTTP body fills: ``"*"`` for the whole message,
    a field name, or ``""`` when every field not in the path comes from the query.
    ``binding`` counts the bindings of the method: 0 for the main rule, 1... for the
    ``additional_bindings``.
    """

    http_method: str
    path: PathTemplate
    body: str
    response_body: str
    method: MethodDescriptor
    binding: int = 0

    def answers(self, http_method: str) -> bool:
        """Whether a request of ``http_method`` is this binding's: its own method, and HEAD for a GET (RFC 9110)."""
        return http_method == self.http_method or (http_method == "HEAD" and self.http_method == "GET")

    @property
    def allowed(self) -> tuple[str, ...]:
        """The methods an ``Allow`` header names for this binding: a GET's HEAD too."""
        return (self.http_method, "HEAD") if self.http_method == "GET" else (self.http_method,)

    @property
    def rpc(self) -> str:
        """The method's full name, such as ``regserve.v1.RegressionService.Predict``."""
        return self.method.full_name

    @property
    def grpc_path(self) -> str:
        """The gRPC method path, such as ``/regserve.v1.RegressionService/Predict``."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def client_streaming(self) -> bool:
        return self.method.client_streaming

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming

    def describe(self) -> str:
        """One line of the route table: method, path template, RPC and body."""
        return f"{self.http_method} {self.path.template} {self.rpc} body={self.body or '-'}"


def resolve_field_path(message: Descriptor, path: str) -> list[FieldDescriptor]:
    """The fields along a dotted path of field names or JSON names; ValueError when one is missing."""
    fields: list[FieldDescriptor] = []
    descriptor: Descriptor | None = message
    for part in path.split("."):
        if descriptor is None:
            raise ValueError(f"{path!r}: {fields[-1].name!r} is not a message")
        field = descriptor.fields_by_name.get(part) or next((f for f in descriptor.fields if f.json_name == part), None)
        if field is None:
            raise ValueError(f"{descriptor.full_name} has no field {part!r}")
        fields.append(field)
        descriptor = field.message_type if not field.is_repeated else None
    return fields


def _routes_of_rule(rule: http_pb2.HttpRule, method: MethodDescriptor, binding: int) -> HttpRoute:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        verb, template = rule.custom.kind.upper(), rule.custom.path
    elif kind in _HTTP_METHODS:
        verb, template = kind.upper(), getattr(rule, kind)
    else:
        raise ValueError(f"{method.full_name}: HTTP rule without a pattern")
    route = HttpRoute(verb, PathTemplate.parse(template), rule.body, rule.response_body, method, binding)
    for variable in route.path.variables:
        field = resolve_field_path(method.input_type, variable)[-1]
        if field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE:
            raise ValueError(f"{method.full_name}: path variable {variable!r} is not a singular scalar field")
    if rule.body not in ("", "*"):
        resolve_field_path(method.input_type, rule.body)
    return route


def http_routes(services: Iterable[ServiceDescriptor]) -> list[HttpRoute]:
    """Every HTTP binding of every method of ``services``, in declaration order."""
    routes = []
    for service in services:
        for method in service.methods:
            options = method.GetOptions()
            # googleapis-common-protos types its extensions as plain FieldDescriptors.
            if not options.HasExtension(annotations_pb2.http):  # type: ignore[arg-type]
                continue
            rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]  # type: ignore[index]
            routes.append(_routes_of_rule(rule, method, 0))
            for i, extra in enumerate(rule.additional_bindings, start=1):
                routes.append(_routes_of_rule(extra, method, i))
    return routes


def contract_services(package: str = "regserve.v1") -> list[ServiceDescriptor]:
    """The services declared in the generated ``*_pb2`` modules of ``package``, by module name."""
    module = importlib.import_module(package)
    services = []
    for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda m: m.name):
        if info.name.endswith("_pb2"):
            file = importlib.import_module(f"{package}.{info.name}").DESCRIPTOR
            services.extend(file.services_by_name.values())
    return services
