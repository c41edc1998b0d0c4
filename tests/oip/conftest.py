"""The Open Inference Protocol suite: real clients (tritonclient) against `regserve serve` processes.

It runs in .venv-oip (tests/oip/requirements.txt), which `make test` creates: tritonclient
needs protobuf < 7 and regserve >= 7.  Where tritonclient is not installed (regserve's own
environment) the suite is not collected; `make test` runs it in its environment.
"""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("tritonclient") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    from tests.oip.server import Served

    @pytest.fixture(scope="session")
    def served(tmp_path_factory):
        """One `regserve serve` with the demo models, its gRPC and REST ports on loopback."""
        server = Served(tmp_path_factory.mktemp("models"))
        yield server
        server.stop()
