"""Opt-in OpenTelemetry traces: a span per RPC (wrapped around the edge) and per REST request (the gateway).

Tracing is on when ``--otlp-endpoint`` (REGSERVE_OTLP_ENDPOINT) names an OTLP/HTTP collector,
or when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set;
OTEL_SDK_DISABLED=true turns it off.  Off, nothing here is installed and the SDK is never
imported: the edge registers the handlers it registers without tracing.  On, each server
has a ``TracerProvider`` of its own (as it has a metrics registry of its own), spans are
exported in batches from the SDK's thread, sampling follows OTEL_TRACES_SAMPLER and
OTEL_TRACES_SAMPLER_ARG (the SDK's default: parentbased_always_on) and the service name
OTEL_SERVICE_NAME (default ``regserve``).

A call's parent comes from its W3C ``traceparent`` (the propagators of OTEL_PROPAGATORS,
by default tracecontext and baggage): sent by a client, or by the gateway, whose span of
the REST request is the parent of the gRPC call's span, in process or over gRPC.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["Tracing", "TracingMiddleware", "tracing_configured"]

_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The propagation headers a REST client sends as Grpc-Metadata-*: the gateway's own span replaces them.
_PROPAGATION_HEADERS = frozenset(f"grpc-metadata-{name}".encode() for name in ("traceparent", "tracestate", "baggage"))


def tracing_configured(otlp_endpoint: str, environ: os._Environ | dict[str, str] = os.environ) -> bool:
    """Whether traces are to be exported: an endpoint is named and the SDK is not disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(otlp_endpoint or any(environ.get(name) for name in _ENDPOINT_VARIABLES))


def _rows(request) -> int | None:
    """The rows of a unary prediction request: regserve.v1's inputs or named rows, the inference protocol's shape."""
    inputs = getattr(request, "inputs", None)
    if inputs is None:
        return None
    if hasattr(inputs, "num_columns"):
        named = getattr(request, "named_inputs", ())
        if named:
            return len(named)
        cells = len(inputs.values) or len(inputs.raw) // 8
        return cells // inputs.num_columns if inputs.num_columns else (1 if cells else 0)
    if len(inputs) and len(inputs[0].shape):
        return int(inputs[0].shape[0])
    return None


def _request_attributes(request) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    model = getattr(request, "model", "") or getattr(request, "model_name", "") or getattr(request, "name", "")
    if isinstance(model, str) and model:
        attributes["regserve.model"] = model
    rows = _rows(request)
    if rows is not None:
        attributes["regserve.rows"] = rows
    return attributes


def _response_attributes(response) -> dict[str, Any]:
    version = getattr(response, "version", None)
    if not isinstance(version, str):
        described = getattr(response, "model_version", None)
        version = described if isinstance(described, str) else getattr(described, "version", None)
        model = getattr(described, "model", None)
        if isinstance(model, str) and model:
            return {"regserve.model": model, "regserve.version": version or ""}
    return {"regserve.version": version} if isinstance(version, str) and version else {}


class Tracing:
    """The tracer of one server, and the wrappers that give its RPCs and REST requests their spans."""

    def __init__(self, provider) -> None:
        from opentelemetry import propagate, trace

        self.provider = provider
        self.tracer = provider.get_tracer("regserve.server")
        self._extract = propagate.extract
        self._inject = propagate.inject
        self._server = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR
        self._current_span = trace.get_current_span

    @classmethod
    def from_settings(cls, otlp_endpoint: str) -> Tracing | None:
        """Export over OTLP/HTTP to ``otlp_endpoint`` (its base URL; empty: the OTEL_* variables); None when off."""
        if not tracing_configured(otlp_endpoint):
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as error:
            raise RuntimeError(
                "tracing is configured (--otlp-endpoint or OTEL_EXPORTER_OTLP_*) but OpenTelemetry's SDK is not "
                'installed: pip install "regserve[tracing]"'
            ) from error
        endpoint = f"{otlp_endpoint.rstrip('/')}/v1/traces" if otlp_endpoint else None
        return cls.with_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))

    @classmethod
    def with_processor(cls, processor) -> Tracing:
        """Tracing whose spans go to ``processor`` (an SDK ``SpanProcessor``)."""
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "regserve"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(processor)
        return cls(provider)

    def shutdown(self) -> None:
        """Export the spans still held and stop the exporter."""
        self.provider.shutdown()

    # ------------------------------------------------------------ gRPC

    def _start(self, service: str, name: str, context):
        parent = self._extract(dict(context.invocation_metadata()))
        return self.tracer.start_span(
            f"{service}/{name}",
            context=parent,
            kind=self._server,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )

    def _end(self, span, code: grpc.StatusCode, attributes: dict[str, Any]) -> None:
        attributes["rpc.grpc.status_code"] = code.value[0]
        span.set_attributes(attributes)
        if code is not grpc.StatusCode.OK:
            span.set_status(self._error, code.name)
        span.end()

    def _share(self, span, attributes: dict[str, Any]) -> None:
        """Give the REST request's span the call's model, version and rows, when the call is made in its process."""
        current = self._current_span()
        parent = getattr(span, "parent", None)
        if parent is not None and current.is_recording() and current.get_span_context().span_id == parent.span_id:
            current.set_attributes({key: value for key, value in attributes.items() if key.startswith("regserve.")})

    def wrap(self, service: str, name: str, kind: str, behavior: Callable) -> Callable:
        """``behavior`` (of a handler of ``kind``: unary_unary, stream_unary, unary_stream, stream_stream) in a span."""
        start, end, share = self._start, self._end, self._share
        ok = grpc.StatusCode.OK

        if kind == "unary_unary":

            def unary_unary(request, context):
                span = start(service, name, context)
                if not span.is_recording():  # sampled out: the call's attributes would be thrown away
                    try:
                        return behavior(request, context)
                    finally:
                        span.end()
                attributes = _request_attributes(request)
                try:
                    response = behavior(request, context)
                except BaseException:
                    end(span, context.code() or _UNKNOWN, attributes)
                    share(span, attributes)
                    raise
                attributes.update(_response_attributes(response))
                end(span, ok, attributes)
                share(span, attributes)
                return response

            return unary_unary

        if kind == "stream_unary":

            def stream_unary(request_iterator, context):
                span = start(service, name, context)
                attributes: dict[str, Any] = {}
                try:
                    response = behavior(request_iterator, context)
                except BaseException:
                    end(span, context.code() or _UNKNOWN, attributes)
                    raise
                attributes.update(_response_attributes(response))
                end(span, ok, attributes)
                return response

            return stream_unary

        request_streaming = kind == "stream_stream"

        def streaming(request, context):
            span = start(service, name, context)
            attributes = {} if request_streaming else _request_attributes(request)
            answered = 0
            try:
                for response in behavior(request, context):
                    if not answered:
                        attributes.update(_response_attributes(response))
                    answered += 1
                    yield response
            except GeneratorExit:
                end(span, _CANCELLED, attributes)
                raise
            except BaseException:
                end(span, context.code() or _UNKNOWN, attributes)
                raise
            attributes["regserve.messages_sent"] = answered
            end(span, ok, attributes)

        return streaming


class TracingMiddleware:
    """ASGI middleware: each HTTP request in a span, whose ``traceparent`` travels to the gRPC call as metadata.

    The gateway forwards ``Grpc-Metadata-<key>`` headers as call metadata, so the span's
    context is handed on as ``Grpc-Metadata-Traceparent``, in place of any the client sent.
    """

    def __init__(self, app, tracing: Tracing) -> None:
        self.app = app
        self._tracing = tracing

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracing = self._tracing
        headers = scope["headers"]
        parent = tracing._extract({key.decode("latin-1"): value.decode("latin-1") for key, value in headers})
        method = scope["method"]
        with tracing.tracer.start_as_current_span(
            method,
            context=parent,
            kind=tracing._server,
            attributes={"http.request.method": method, "url.path": scope["path"]},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            tracing._inject(carrier)
            forwarded = [(key, value) for key, value in headers if key not in _PROPAGATION_HEADERS]
            forwarded.extend(
                (f"grpc-metadata-{key}".encode(), value.encode("latin-1")) for key, value in carrier.items()
            )
            scope = {**scope, "headers": forwarded}
            status = 0

            async def sending(message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, sending)
            except BaseException:
                span.set_status(tracing._error, "the request raised")
                raise
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                model = (scope.get("path_params") or {}).get("model")
                if isinstance(model, str) and model:
                    span.set_attribute("regserve.model", model)
                if status:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(tracing._error, str(status))
