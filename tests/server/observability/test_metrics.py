"""Prometheus metrics scraped over HTTP from a real server: each one moves when its event happens."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from regserve.client import InvalidArgument, ModelAdminClient, NotFound, RegressionClient
from tests.conftest import start_server

R = "regserve.v1.RegressionService"
M = "regserve.v1.ModelService"


@pytest.fixture
def served(tmp_path):
    app = start_server(tmp_path / "models", metrics_port=0)
    yield app
    app.stop(0)


def scrape(app) -> dict[tuple[str, frozenset], float]:
    """Every sample of the server's /metrics page, by (sample name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_request_latency_prediction_training_and_registry_metrics_move(served, linear_data):
    X, y = linear_data
    target = f"127.0.0.1:{served.port}"
    before = scrape(served)
    assert value(before, "regserve_requests_total", service=R, method="Predict", code="OK") == 0
    with RegressionClient(target, timeout=30) as client, ModelAdminClient(target, timeout=30) as admin:
        client.train("house", X, y)
        client.train("house", X, y)
        client.predict("house", X[:7])
        client.predict("house", X[:5], version="v1")
        with pytest.raises(NotFound):
            client.predict("nowhere", X[:1])
        list(client.iter_batch_predict("house", [X[:3], X[:4]]))
        admin.promote("house", "v1")
        admin.rollback("house")
        admin.freeze("house", "v1")
        admin.unfreeze("house", "v1")
        admin.set_split("house", {"v1": 1.0, "v2": 1.0})
        split_arm = client.predict("house", X[:2], routing_key="caller-1").version
        client.train("house", X, y, promote=False)
        admin.delete_version("house", "v3")
    after = scrape(served)

    assert value(after, "regserve_requests_total", service=R, method="Predict", code="OK") == 3
    assert value(after, "regserve_requests_total", service=R, method="Predict", code="NOT_FOUND") == 1
    assert value(after, "regserve_requests_total", service=R, method="BatchPredict", code="OK") == 1
    assert value(after, "regserve_requests_total", service=M, method="PromoteVersion", code="OK") == 1
    assert value(after, "regserve_request_duration_seconds_count", service=R, method="Predict") == 4
    assert value(after, "regserve_request_duration_seconds_sum", service=R, method="Predict") > 0

    assert value(after, "regserve_predicted_rows_total", model="house", version="v2", arm="serving") == 7 + 3 + 4
    assert value(after, "regserve_predicted_rows_total", model="house", version="v1", arm="explicit") == 5
    assert value(after, "regserve_predictions_total", model="house", version="v2", arm="serving") == 3

    assert value(after, "regserve_predicted_rows_total", model="house", version=split_arm, arm=split_arm) == 2

    assert value(after, "regserve_training_runs_total", model="house", code="OK") == 3
    assert value(after, "regserve_training_duration_seconds_count", model="house") == 3
    events = {
        e: value(after, "regserve_registry_events_total", model="house", event=e)
        for e in ("create", "promote", "rollback", "freeze", "unfreeze", "split", "delete")
    }
    assert events == {"create": 3, "promote": 3, "rollback": 1, "freeze": 1, "unfreeze": 1, "split": 1, "delete": 1}


def test_failed_training_is_counted_by_code(served):
    with RegressionClient(f"127.0.0.1:{served.port}", timeout=30) as client, pytest.raises(InvalidArgument):
        client.train("bad name!", np.eye(3), np.ones(3))
    assert value(scrape(served), "regserve_training_runs_total", model="", code="INVALID_ARGUMENT") == 1


def test_in_flight_gauge_counts_an_open_stream(served, linear_data):
    X, y = linear_data
    target = f"127.0.0.1:{served.port}"
    release, opened = threading.Event(), threading.Event()

    def chunks():
        yield X[:2]
        opened.set()
        release.wait(10)
        yield X[2:4]

    with RegressionClient(target, timeout=30) as client:
        client.train("house", X, y)
        results = []
        worker = threading.Thread(target=lambda: results.extend(client.iter_batch_predict("house", chunks())))
        worker.start()
        assert opened.wait(10)
        # The client asks for the second chunk once the first is sent, which may be before the
        # server has begun the call: wait (generously) for the gauge to see it.
        deadline = time.monotonic() + 10
        during = scrape(served)
        while value(during, "regserve_requests_in_flight", service=R, method="BatchPredict") < 1:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
            during = scrape(served)
        release.set()
        worker.join(10)
    assert len(results) == 2
    assert value(during, "regserve_requests_in_flight", service=R, method="BatchPredict") == 1
    assert value(scrape(served), "regserve_requests_in_flight", service=R, method="BatchPredict") == 0


def test_metrics_can_be_turned_off(tmp_path):
    app = start_server(tmp_path / "models", metrics_port=-1)
    try:
        assert app.metrics_port == -1 and app._metrics_server is None
    finally:
        app.stop(0)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_a_scrape_counts_the_calls_finished_just_before_it(served):
    # The recorder's thread then waits an hour between batches: only the scrape itself can
    # bring the count of the call below up to date.
    served.edge._recorder.interval = 3600
    time.sleep(0.3)  # the thread's current 0.1 s wait ends; the next one is the long one
    with RegressionClient(f"127.0.0.1:{served.port}") as client:
        with pytest.raises(NotFound):
            client.model_info("nowhere")
    samples = scrape(served)
    assert value(samples, "regserve_requests_total", service=R, method="ModelInfo", code="NOT_FOUND") == 1


@pytest.mark.skipif(not _ipv6_loopback(), reason="needs the IPv6 loopback address")
def test_metrics_are_served_on_the_servers_host(tmp_path):
    from regserve.server.config import Settings
    from regserve.server.runtime.application import create_server

    app = create_server(Settings(host="::1", port=0, model_dir=tmp_path / "models", demo_models=False, metrics_port=0))
    app.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{app.metrics_port}/metrics", timeout=5) as response:
            assert b"regserve_requests_in_flight" in response.read()
    finally:
        app.stop(0)


def test_the_call_tally_exposes_what_prometheus_clients_own_metrics_would():
    # The edge tallies calls in batches (CallTally); its page must read like a Counter and
    # a Histogram of prometheus-client fed one call at a time.  Durations fall on the
    # bucket bounds, between them and past the last one.
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from regserve.server.observability.metrics import CallTally

    buckets = (0.001, 0.01, 0.1)
    rng = np.random.default_rng(7)
    durations = [*buckets, 0.0, 0.5, *rng.uniform(0, 0.2, size=200).tolist()]
    reference = CollectorRegistry()
    counter = Counter("regserve_requests", "c", ["service", "method", "code"], registry=reference)
    histogram = Histogram(
        "regserve_request_duration_seconds", "h", ["service", "method"], buckets=buckets, registry=reference
    )
    tallied = CollectorRegistry()
    tally = CallTally(buckets)
    tallied.register(tally)
    tally.add_method("S", "Idle")
    histogram.labels("S", "Idle")
    for batch in (durations[:50], durations[50:]):  # two batches add up
        tally.add({("S", "Get", "OK"): len(batch), ("S", "Get", "NOT_FOUND"): 2}, {("S", "Get"): batch})
        for seconds in batch:
            counter.labels("S", "Get", "OK").inc()
            histogram.labels("S", "Get").observe(seconds)
        counter.labels("S", "Get", "NOT_FOUND").inc(2)

    def samples(registry):
        text = generate_latest(registry).decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.name.endswith("_created")
        }

    expected, got = samples(reference), samples(tallied)
    assert got.keys() == expected.keys()
    for key, number in expected.items():
        assert got[key] == pytest.approx(number, rel=1e-12), key
    assert value(got, "regserve_request_duration_seconds_bucket", service="S", method="Get", le="0.01") == sum(
        d <= 0.01 for d in durations
    )
    assert value(got, "regserve_request_duration_seconds_count", service="S", method="Idle") == 0
