"""grpc.health.v1 with watchers that go away or stop reading: status changes and the drain never wait on them."""

from __future__ import annotations

import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import start_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_status_changes_and_the_drain_never_wait_on_watchers(tmp_path):
    app = start_server(tmp_path / "models")
    target = f"127.0.0.1:{app.port}"
    channels = [grpc.insecure_channel(target) for _ in range(4)]
    try:
        calls = [
            health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            for channel in channels
            for _ in range(4)
        ]
        for call in calls:
            assert next(call).status == NOT_SERVING  # no model yet

        def flip() -> None:
            for i in range(300):
                app.health.set("", SERVING if i % 2 else NOT_SERVING)

        # Half the watchers go away while the status flips; the other half never read again.
        flipper = threading.Thread(target=flip)
        flipper.start()
        for call in calls[::2]:
            call.cancel()
        flipper.join(15)
        assert not flipper.is_alive(), "a status change waited on a watcher"
        with grpc.insecure_channel(target) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == SERVING  # the last of the 300 changes
    finally:
        stopper = threading.Thread(target=app.stop, args=(0,))
        stopper.start()
        stopper.join(20)
        for channel in channels:
            channel.close()
    assert not stopper.is_alive(), "the drain waited on a watcher"
