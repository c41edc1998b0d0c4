"""Shared fixtures: a real regserve server on 127.0.0.1:0, clients on real channels, an S3 API on loopback.

The S3 API is moto's server mode, started once per session on 127.0.0.1 with a port
the OS picks; each test gets a bucket of its own.  The AWS_* variables point every
S3 client of the session (and the servers it starts) at it.
"""

from __future__ import annotations

import itertools
import logging
import os

import grpc
import numpy as np
import pytest

from regserve.client import RegressionClient
from regserve.server.config import Settings
from regserve.server.runtime.application import create_server

_BUCKETS = itertools.count(1)


def start_server(model_dir, **overrides):
    """Start a real server on an ephemeral loopback port; the caller stops it."""
    settings = Settings(host="127.0.0.1", port=0, model_dir=model_dir, demo_models=False, **overrides)
    app = create_server(settings)
    app.start()
    return app


@pytest.fixture
def model_dir(tmp_path):
    return tmp_path / "models"


@pytest.fixture
def app(model_dir):
    app = start_server(model_dir)
    yield app
    app.stop(0)


@pytest.fixture
def target(app):
    return f"127.0.0.1:{app.port}"


@pytest.fixture
def client(target):
    with RegressionClient(target, timeout=60) as client:
        yield client


@pytest.fixture
def channel(target):
    with grpc.insecure_channel(target) as channel:
        yield channel


@pytest.fixture
def linear_data():
    """400 rows, 5 features, a known linear relation plus seeded noise."""
    rng = np.random.default_rng(20261123)
    X = rng.normal(size=(400, 5))
    coef = np.array([1.5, -2.0, 0.5, 3.0, -0.25])
    y = X @ coef + 4.0 + rng.normal(scale=0.1, size=400)
    return X, y


@pytest.fixture(scope="session")
def s3_endpoint():
    """The endpoint URL of a moto S3 server on loopback, with the AWS_* variables set for it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    settings = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield endpoint
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()


@pytest.fixture
def s3_url(s3_endpoint):
    """``s3://<a new bucket>/registry``."""
    import s3fs

    bucket = f"regserve-test-{next(_BUCKETS)}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/registry"
