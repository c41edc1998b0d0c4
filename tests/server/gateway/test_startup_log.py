"""The gateway's start-up line counts the routes it serves, every API and probe path included."""

from __future__ import annotations

import logging
import re

from tests.server.gateway.helpers import running_gateway


def test_the_start_up_line_counts_every_path_served(caplog):
    caplog.set_level(logging.INFO, logger="regserve.server.gateway.app")
    # Nothing listens upstream: the routes counted do not depend on the gRPC server.
    with running_gateway("127.0.0.1:1") as http:
        document = http.get("/openapi.json").json()
        docs = http.get("/docs")
    operations = [(method, path) for path, item in document["paths"].items() for method in item]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("REST gateway to"))
    found = re.fullmatch(r"REST gateway to 127\.0\.0\.1:1: (\d+) routes \((\d+) /v1, (\d+) /v2, (.*)\)", line)
    assert found is not None, line
    total, v1, v2, others = int(found[1]), int(found[2]), int(found[3]), found[4].split(", ")
    assert others == ["/healthz", "/readyz", "/openapi.json", "/docs"]
    assert docs.status_code == 200
    # What /openapi.json lists (the API and the two probes), plus itself and /docs.
    assert total == len(operations) + 2 == v1 + v2 + len(others)
    assert v1 == sum(path.startswith("/v1/") for _, path in operations)
    assert v2 == sum(path.startswith("/v2") for _, path in operations)
