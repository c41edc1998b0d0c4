"""An S3 registry that stops answering: changes fail UNAVAILABLE REGISTRY_UNAVAILABLE and write nothing,
and a serving replica goes on serving what it has loaded, then follows the registry again once it is back.

Each test runs an S3 API of its own (moto's server mode on loopback), so stopping it leaves
the suite's shared one alone; it is started again on the same port to look at what was stored.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from regserve.client import ModelAdminClient, RegressionClient
from regserve.client import Unavailable as ClientUnavailable
from regserve.server.config import Settings
from regserve.server.errors import Unavailable
from regserve.server.models.estimator import LinearModel
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.storage import (
    S3_ATTEMPTS,
    S3_CONNECT_TIMEOUT_SECONDS,
    S3_READ_TIMEOUT_SECONDS,
    s3_client_config,
)
from regserve.server.registry.store import ModelStore
from regserve.server.runtime.application import create_server
from tests.server.registry.conftest import raw_keys

WAIT_SECONDS = 60  # generous: waiting ends as soon as the behaviour is seen
_BUCKETS = itertools.count(1)


@dataclass
class OwnS3:
    """An S3 API on loopback that a test may stop and start again on the same port."""

    server: ThreadedMotoServer
    port: int
    url: str
    running: bool = True

    def stop(self) -> None:
        self.server.stop()
        self.running = False

    def start(self) -> None:
        # moto keeps its buckets in the process, so the restarted API serves what was stored.
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.running = True


@pytest.fixture
def own_s3(monkeypatch):
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    bucket = f"regserve-unreachable-{next(_BUCKETS)}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    s3 = OwnS3(server, port, f"s3://{bucket}/registry")
    yield s3
    if s3.running:
        s3.server.stop()


def _arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"coef": rng.normal(size=(3,)), "intercept": np.array(rng.normal())}


def _estimator(seed: int) -> LinearModel:
    rng = np.random.default_rng(seed)
    return LinearModel("linear", rng.normal(size=(1, 3)), rng.normal(size=(1,)))


def _wait_for(condition, what: str) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < WAIT_SECONDS, f"never saw {what}"
        time.sleep(0.05)


def test_the_s3_client_is_bounded_unless_the_aws_variables_say_otherwise():
    assert s3_client_config({}) == {
        "connect_timeout": S3_CONNECT_TIMEOUT_SECONDS,
        "read_timeout": S3_READ_TIMEOUT_SECONDS,
        "retries": {"mode": "standard", "total_max_attempts": S3_ATTEMPTS},
    }
    # Left out, botocore reads them from the variables itself.
    assert s3_client_config({"AWS_MAX_ATTEMPTS": "7", "AWS_RETRY_MODE": "adaptive"})["retries"] == {}


def test_every_change_while_the_store_is_down_is_unavailable_and_writes_nothing(own_s3):
    registry = ModelRegistry(own_s3.url)
    for seed in range(2):
        registry.create_version("m", _arrays(seed), {})
    registry.promote("m", "v1")
    keys, state = raw_keys(registry), registry.read_state("m")
    own_s3.stop()
    changes = {
        "create": lambda: registry.create_version("m", _arrays(5), {}),
        "promote": lambda: registry.promote("m", "v2", "down"),
        "freeze": lambda: registry.freeze("m", "v2", "down"),
        "split": lambda: registry.set_split("m", {"v1": 1, "v2": 1}, "down"),
        "delete": lambda: registry.delete_version("m", "v2", "down"),
        "rollback": lambda: registry.rollback("m", "down"),
    }
    for name, change in changes.items():
        with pytest.raises(Unavailable) as info:
            change()
        assert info.value.reason == "REGISTRY_UNAVAILABLE", name
        assert info.value.metadata == {"registry": own_s3.url}, name
        assert "cannot be reached" in info.value.message, name
    own_s3.start()
    assert raw_keys(registry) == keys
    assert registry.read_state("m") == state


def _stop_before_metadata(storage, s3: OwnS3):
    """``storage``, whose store goes down after a version's weights are written, before its metadata."""
    create = storage.create

    def create_then_fail(key: str, data: bytes) -> bool:
        if key.endswith("/metadata.json"):
            s3.stop()
        return create(key, data)

    storage.create = create_then_fail  # publish writes each file through it
    return storage


def test_a_version_whose_upload_the_outage_cut_is_never_listed_and_its_number_is_not_reused(own_s3):
    registry = ModelRegistry(own_s3.url)
    registry.create_version("m", _arrays(0), {})
    cut = ModelRegistry(own_s3.url, storage=_stop_before_metadata(ModelRegistry(own_s3.url).storage, own_s3))
    with pytest.raises(Unavailable) as info:
        cut.create_version("m", _arrays(1), {})
    assert info.value.reason == "REGISTRY_UNAVAILABLE"
    own_s3.start()
    assert "models/m/versions/v2/weights.npz" in raw_keys(registry)  # what the outage left behind
    assert [m.version for m in registry.list_versions("m")] == ["v1"]
    assert registry.scan_versions("m")[1] == {}
    assert registry.create_version("m", _arrays(2), {}).version == "v3"


def test_a_replica_serves_its_models_while_the_store_is_down_and_follows_it_once_back(own_s3, caplog):
    caplog.set_level(logging.INFO, logger="regserve.server.registry.store")
    store = ModelStore(ModelRegistry(own_s3.url), poll_interval=0.1)
    store.load_all()
    for seed in range(2):
        store.add_version("m", _estimator(seed), {}, promote=seed == 0)
    settings = Settings(host="127.0.0.1", port=0, model_dir=own_s3.url, demo_models=False, poll_interval=0.1)
    app = create_server(settings, store)
    app.start()
    target = f"127.0.0.1:{app.port}"
    rows = np.array([[0.5, -1.0, 2.0]])
    try:
        with RegressionClient(target, timeout=30) as client, ModelAdminClient(target, timeout=30) as admin:
            assert client.predict("m", rows).version == "v1"
            own_s3.stop()

            def logged(text: str) -> list[logging.LogRecord]:
                return [
                    r for r in caplog.records if r.name == "regserve.server.registry.store" and text in r.getMessage()
                ]

            _wait_for(lambda: logged("the registry cannot be read"), "the poll fail")
            for _ in range(20):
                assert client.predict("m", rows).version == "v1"
            assert client.health() == "SERVING"
            with pytest.raises(ClientUnavailable) as info:
                admin.promote("m", "v2", "while down")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.reason == "REGISTRY_UNAVAILABLE"
            # The outage is one line, however many polls failed meanwhile, and no traceback.
            (warning,) = logged("the registry cannot be read")
            assert warning.levelno == logging.WARNING and warning.exc_info is None
            own_s3.start()
            _wait_for(lambda: logged("the registry can be read again"), "the poll see the store back")
            # The change refused while down was never made: the replica still serves v1.
            assert ModelRegistry(own_s3.url).read_state("m").serving == "v1"
            ModelRegistry(own_s3.url).promote("m", "v2", "through another replica")
            _wait_for(lambda: client.predict("m", rows).version == "v2", "the replica follow the registry again")
            # A second outage is told too, also when the store came back unchanged after the first.
            own_s3.stop()
            _wait_for(lambda: len(logged("the registry cannot be read")) == 2, "the second outage logged")
            own_s3.start()
            _wait_for(lambda: len(logged("the registry can be read again")) == 2, "the second return logged")
    finally:
        app.stop(0)
