"""Each method's precomputed part (``Route``), and what becomes of finished calls (``record_calls``).

The edge hands each finished call to a ``BatchWorker`` as one tuple, built once:
(route, code, started, finished, request id, principal, peer), the times from
``time.perf_counter``.  ``record_calls`` runs on the worker's thread, a batch at a
time: it counts the calls, observes their latency and writes their access-log lines.
"""

from __future__ import annotations

import itertools
import logging
import time
from json.encoder import encode_basestring_ascii as _json_string

import grpc

from regserve.server.edge import auth
from regserve.server.observability.access_log import ACCESS_LOGGER, access_writer
from regserve.server.observability.metrics import GrpcMethod, Metrics
from regserve.server.rpc.methods import Method

__all__ = ["Route", "record_calls"]

_CODE_NAMES = {code: code.name for code in grpc.StatusCode}  # a dict lookup, not the enum's name property

_access_log = logging.getLogger(ACCESS_LOGGER)
_ANONYMOUS_JSON = _json_string(str(auth.ANONYMOUS))


def _count_value(counter: itertools.count) -> int:
    """How many times ``next`` was called on a count started at 0 (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


class Route:
    """One method's precomputed part: names, metric series and what to count on success.

    ``request_streaming`` and ``response_streaming`` are the method's kind, as its handler has it.
    """

    def __init__(self, method: Method, metrics: Metrics, request_streaming: bool, response_streaming: bool) -> None:
        self.method = method.full_name
        self.service, self.name = method.service, method.name
        # Calls begun and ended, as atomic counters (``next`` holds the GIL): the gauge of
        # calls in flight is their difference, taken when Prometheus scrapes, so a call
        # pays two counter steps instead of two locked gauge updates.
        self.begun = itertools.count()
        self.ended = itertools.count()
        # A stream's messages, counted the same way for grpc_server_msg_received/sent_total.
        self.received = itertools.count()
        self.sent = itertools.count()
        kind = {(False, False): "unary", (True, False): "client_stream", (False, True): "server_stream"}
        metrics.calls.add_method(
            self.service,
            self.name,
            GrpcMethod(
                kind.get((request_streaming, response_streaming), "bidi_stream"),
                lambda: _count_value(self.begun),
                (lambda: _count_value(self.received)) if request_streaming else None,
                (lambda: _count_value(self.sent)) if response_streaming else None,
            ),
        )
        metrics.in_flight.labels(self.service, self.name).set_function(
            lambda: _count_value(self.begun) - _count_value(self.ended)
        )
        self.is_train = method.trains
        self.unary_response = False
        self.request_streaming = False
        self.log_prefix = f'"method":{_json_string(self.method)},"code":"'


def record_calls(metrics: Metrics, log_peer: bool, calls: list[tuple]) -> None:
    """Count finished calls, observe their latency and write their access-log lines (the recorder's thread)."""
    log = _access_log.isEnabledFor(logging.INFO)
    wall = time.time() - time.perf_counter()  # turns the calls' perf_counter ends into timestamps
    codes: dict[tuple[Route, grpc.StatusCode], int] = {}
    durations: dict[Route, list[float]] = {}
    lines = []
    for route, code, started, finished, request_id, principal, peer in calls:
        key = (route, code)
        codes[key] = codes.get(key, 0) + 1
        elapsed = finished - started
        seconds = durations.get(route)
        if seconds is None:
            seconds = durations[route] = []
        seconds.append(elapsed)
        if not log:
            continue
        # One JSON object per call, formatted by hand: the keys and codes need no escaping,
        # and the caller's strings go through json's C string encoder.
        # The numbers are written from integers (microseconds): formatting a float
        # with a fixed number of decimals costs more.
        ts = str(int((finished + wall) * 1e6))
        ms = str(round(elapsed * 1e6)).zfill(4)
        peer_field = f'"peer":{_json_string(peer)},' if log_peer else ""
        who = _ANONYMOUS_JSON if principal is auth.ANONYMOUS else _json_string(str(principal))
        line = (
            f'{{"ts":{ts[:-6]}.{ts[-6:]},{route.log_prefix}{_CODE_NAMES[code]}",'
            f'"duration_ms":{ms[:-3]}.{ms[-3:]},{peer_field}"principal":{who},'
            f'"request_id":{_json_string(request_id)}}}'
        )
        lines.append(line)
    metrics.calls.add(
        {(route.service, route.name, code.name): count for (route, code), count in codes.items()},
        {(route.service, route.name): seconds for route, seconds in durations.items()},
    )
    if not lines:
        return
    writer = access_writer()
    if writer is not None:
        writer.write_lines(lines)  # written by this thread: the lines need no second queue
    else:
        for line in lines:
            _access_log.info(line)
