"""Shared fixtures: a real regserve server on 127.0.0.1:0 and clients on real channels."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from regserve.client import RegressionClient
from regserve.server.config import Settings
from regserve.server.runtime.application import create_server


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
