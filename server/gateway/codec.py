"""Requests and responses of the REST gateway in protobuf's canonical JSON mapping.

A request message is filled from three places, as google.api.http defines: the
body (the whole message for ``body: "*"``, one field for ``body: "field"``), the
path variables, and, for the fields neither of those binds, the query string.
Path variables win over the body.  Query parameters are named by field name or
JSON name, dotted for nested fields (``?spec.model=house``), and repeated for
repeated fields (``?ids=1&ids=2``).
"""

from __future__ import annotations

import json
from typing import cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import code_pb2

from regserve.server.gateway.errors import GatewayError
from regserve.server.gateway.rules import HttpRoute, resolve_field_path
from regserve.server.json_objects import json_error, unique_keys

__all__ = ["build_request", "message_json", "parse_message", "response_json"]

_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def parse_message(data: bytes | str | dict, message: Message, *, field: str = "") -> Message:
    """Merge JSON ``data`` into ``message`` (or into its ``field``); GatewayError 400 when it does not fit."""
    try:
        value = json.loads(data, object_pairs_hook=unique_keys) if isinstance(data, bytes | str) else data
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError(code_pb2.INVALID_ARGUMENT, f"malformed JSON: {json_error(exc)}", "MALFORMED_JSON") from exc
    except RecursionError:
        raise GatewayError(code_pb2.INVALID_ARGUMENT, "malformed JSON: nested too deeply", "MALFORMED_JSON") from None
    if field:
        # types-protobuf types ``Message.DESCRIPTOR`` as either backend's class; both are a ``Descriptor``.
        value = {resolve_field_path(cast(Descriptor, message.DESCRIPTOR), field)[-1].json_name: value}
    if not isinstance(value, dict):
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            f"the body must be a JSON object for {message.DESCRIPTOR.full_name}, not {type(value).__name__}",
            "INVALID_JSON_MESSAGE",
        )
    try:
        json_format.ParseDict(value, message)
    except (json_format.ParseError, RecursionError) as exc:
        raise GatewayError(
            code_pb2.INVALID_ARGUMENT,
            f"JSON does not match {message.DESCRIPTOR.full_name}: {exc}",
            "INVALID_JSON_MESSAGE",
        ) from exc
    return message


def _typed(field: FieldDescriptor, text: str):
    """A query or path string as the JSON value protobuf's mapping expects for ``field``."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        if text.lower() not in _BOOLEANS:
            raise ValueError(f"expected true or false, got {text!r}")
        return _BOOLEANS[text.lower()]
    if field.type == FieldDescriptor.TYPE_ENUM and text.lstrip("-").isdigit():
        return int(text)
    return text


def _set_strings(message: Message, values: dict[str, list[str]], what: str) -> None:
    """Merge string ``values`` keyed by dotted field path into ``message``; GatewayError 400 on a bad one."""
    nested: dict = {}
    violations = []
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    for path, texts in values.items():
        try:
            fields = resolve_field_path(descriptor, path)
            leaf = fields[-1]
            if leaf.message_type is not None and leaf.message_type.GetOptions().map_entry:
                raise ValueError("map fields cannot be set from the query string")
            if not leaf.is_repeated and len(texts) > 1:
                raise ValueError("given more than once")
            typed = [_typed(leaf, t) for t in texts]
        except ValueError as exc:
            violations.append((path, str(exc)))
            continue
        node = nested
        for f in fields[:-1]:
            node = node.setdefault(f.json_name, {})
        node[leaf.json_name] = typed if leaf.is_repeated else typed[0]
    if not violations:
        try:
            json_format.ParseDict(nested, update := type(message)())
            message.MergeFrom(update)
            return
        except json_format.ParseError as exc:
            violations.append((",".join(values), str(exc)))
    raise GatewayError(
        code_pb2.INVALID_ARGUMENT,
        f"bad {what}: " + "; ".join(f"{field}: {why}" for field, why in violations),
        "INVALID_PARAMETER",
        violations=tuple(violations),
    )


def build_request(
    route: HttpRoute,
    message_class: type[Message],
    path_values: dict[str, str],
    query: list[tuple[str, str]],
    body: bytes | str | dict | None,
) -> Message:
    """The request message of one HTTP call on ``route``."""
    message = message_class()
    if route.body and body not in (None, b"", ""):
        parse_message(body, message, field="" if route.body == "*" else route.body)
    if query:
        if route.body == "*":
            names = ", ".join(sorted({name for name, _ in query}))
            raise GatewayError(
                code_pb2.INVALID_ARGUMENT,
                f"{route.http_method} {route.path.template} takes every field from the body; unexpected query: {names}",
                "UNEXPECTED_QUERY_PARAMETER",
            )
        grouped: dict[str, list[str]] = {}
        for name, value in query:
            grouped.setdefault(name, []).append(value)
        _set_strings(message, grouped, "query parameter")
    if path_values:
        _set_strings(message, {k: [v] for k, v in path_values.items()}, "path variable")
    return message


def message_json(message: Message) -> dict:
    """``message`` as a dict in protobuf's canonical JSON mapping (lowerCamelCase names)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def response_json(route: HttpRoute, message: Message) -> object:
    """The JSON value a route answers: the response message, or its ``response_body`` field."""
    value = message_json(message)
    if route.response_body:
        return value.get(resolve_field_path(cast(Descriptor, message.DESCRIPTOR), route.response_body)[-1].json_name)
    return value
