"""Targets and balancing, against two real regserve servers on loopback.

Server A serves the model "house" at v1 and server B at v2, so the version of an
answer says which server gave it; their own GetStatus counts confirm it.
"""

from __future__ import annotations

import pytest

from regserve.client import ModelAdminClient, RegressionClient
from tests.conftest import start_server

CALLS = 20


@pytest.fixture
def servers(tmp_path, linear_data):
    X, y = linear_data
    started = [start_server(tmp_path / "a"), start_server(tmp_path / "b")]
    try:
        for versions, app in zip((1, 2), started, strict=True):
            with RegressionClient(f"127.0.0.1:{app.port}", timeout=60) as client:
                for _ in range(versions):
                    client.train("house", X, y)
        yield [f"127.0.0.1:{app.port}" for app in started]
    finally:
        for app in started:
            app.stop(0)


def served_requests(target: str) -> int:
    """The Predict calls ``target`` answered for "house", by its own count."""
    with ModelAdminClient(target, timeout=30) as admin:
        (status,) = admin.status("house")
    return sum(version.requests for version in status.versions)


def test_round_robin_spreads_calls_over_every_address(servers, linear_data):
    X, _ = linear_data
    with RegressionClient("ipv4:" + ",".join(servers), timeout=30) as client:
        # Round robin picks among the connections that are ready; call until both are.
        seen = set()
        for _ in range(200):
            seen.add(client.predict("house", X[:1]).version)
            if len(seen) == 2:
                break
        assert seen == {"v1", "v2"}
        before = [served_requests(target) for target in servers]
        versions = [client.predict("house", X[:1]).version for _ in range(CALLS)]
    after = [served_requests(target) for target in servers]
    assert [b - a for a, b in zip(before, after, strict=True)] == [CALLS // 2, CALLS // 2]
    assert versions.count("v1") == versions.count("v2") == CALLS // 2


def test_a_service_config_given_replaces_round_robin(servers, linear_data):
    X, _ = linear_data
    pick_first = {"loadBalancingConfig": [{"pick_first": {}}]}
    with RegressionClient("ipv4:" + ",".join(servers), timeout=30, service_config=pick_first) as client:
        versions = {client.predict("house", X[:1]).version for _ in range(CALLS)}
    assert len(versions) == 1
    assert sum(served_requests(target) for target in servers) == CALLS


def test_an_address_with_nothing_listening_is_passed_over(servers, linear_data):
    X, _ = linear_data
    # Port 1 on loopback: nothing listens there.
    with RegressionClient(f"ipv4:127.0.0.1:1,{servers[0]}", timeout=30) as client:
        versions = [client.predict("house", X[:1]).version for _ in range(CALLS)]
    assert versions == ["v1"] * CALLS


@pytest.mark.parametrize(
    "form", ["{host}:{port}", "dns:///{host}:{port}", "dns:///localhost:{port}", "ipv4:{host}:{port}"]
)
def test_every_form_of_target_reaches_the_server(servers, form):
    host, port = servers[1].split(":")
    with ModelAdminClient(form.format(host=host, port=port), timeout=30) as admin:
        assert [state.serving_version for state in admin.list_models()] == ["v2"]
