"""The embedded default: an empty registry gets demo models that answer at once."""

from __future__ import annotations

import numpy as np
import pytest

from regserve.client import RegressionClient
from regserve.server.config import Settings
from regserve.server.datasets.demo import ensure_demo_models
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.runtime.application import create_server


def test_demo_models_serve_regression_and_classification(tmp_path):
    store = ModelStore(ModelRegistry(tmp_path))
    store.load_all()
    ensure_demo_models(store)
    app = create_server(Settings(port=0, model_dir=tmp_path, demo_models=False), store)
    app.start()
    try:
        with RegressionClient(f"127.0.0.1:{app.port}") as client:
            assert client.health() == "SERVING"
            diabetes = client.predict_named(
                "diabetes",
                [
                    {
                        "age": 50,
                        "sex": 1,
                        "bmi": 25,
                        "bp": 90,
                        "s1": 190,
                        "s2": 115,
                        "s3": 50,
                        "s4": 4,
                        "s5": 4.6,
                        "s6": 90,
                    }
                ],
            )
            assert 25 < diabetes.values[0] < 346  # inside the range of the training targets
            iris = client.predict("iris", np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
            assert iris.labels == ["setosa", "virginica"]
            assert iris.classes == ["setosa", "versicolor", "virginica"]
            np.testing.assert_allclose(iris.probabilities.sum(axis=1), 1.0)
            assert client.model_info("iris").validation.metrics["accuracy"] > 0.85
    finally:
        app.stop(0)


def test_demo_models_are_not_retrained_when_models_exist(tmp_path):
    store = ModelStore(ModelRegistry(tmp_path))
    ensure_demo_models(store)
    ensure_demo_models(store)
    assert [v.version for v in ModelRegistry(tmp_path).list_versions("diabetes")] == ["v1"]


def test_replicas_bootstrapping_one_empty_s3_registry_at_once_store_each_demo_model_once(s3_url, caplog):
    import logging
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from regserve.server.datasets.demo import DEMO_MODELS

    caplog.set_level(logging.INFO, logger="regserve.server.datasets.demo")
    stores = [ModelStore(ModelRegistry(s3_url)) for _ in range(3)]
    for store in stores:
        store.load_all()
    barrier = threading.Barrier(len(stores))

    def bootstrap(store: ModelStore) -> None:
        barrier.wait(timeout=60)
        ensure_demo_models(store)

    with ThreadPoolExecutor(len(stores)) as pool:
        for future in [pool.submit(bootstrap, store) for store in stores]:
            future.result(timeout=300)
    for store in stores:
        store.refresh()  # what the poll does: a loser may have refreshed before the winner promoted
    registry = ModelRegistry(s3_url)
    assert registry.list_models() == sorted(DEMO_MODELS)
    for name in DEMO_MODELS:
        assert [v.version for v in registry.list_versions(name)] == ["v1"]
        state = registry.read_state(name)
        assert state.serving == "v1" and state.last_version == 1
        assert [h.action for h in state.history] == ["promote"]
        # The replicas that lost the race serve what the winner stored.
        assert {store.resolve(name).version for store in stores} == {"v1"}
    refused = [r for r in caplog.records if "stored by another replica" in r.getMessage()]
    print(f"{len(refused)} demo trainings refused by the registry, {len(DEMO_MODELS)} stored")


@pytest.mark.slow
def test_three_serve_processes_started_at_once_on_an_empty_s3_registry_serve_one_version_of_each(s3_url):
    """`regserve serve` with the demo models on, three processes at once, as a Deployment's first rollout starts."""
    import os
    import re
    import subprocess
    import sys
    import threading
    import time

    import grpc

    from regserve.server.datasets.demo import DEMO_MODELS
    from regserve.v1 import model_service_pb2 as mpb
    from regserve.v1 import model_service_pb2_grpc

    command = [sys.executable, "-m", "regserve.server.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
    command += ["--model-dir", s3_url, "--no-access-log", "--poll-interval", "0.2", "--drain-seconds", "0"]
    processes = [subprocess.Popen(command, env=dict(os.environ), stderr=subprocess.PIPE, text=True) for _ in range(3)]
    logs: list[list[str]] = [[] for _ in processes]
    readers = [
        threading.Thread(target=lambda p=p, lines=lines: lines.extend(p.stderr), daemon=True)
        for p, lines in zip(processes, logs, strict=True)
    ]
    for reader in readers:
        reader.start()

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, f"never saw {what}:\n" + "\n".join("".join(lines) for lines in logs)
            time.sleep(0.05)

    def serving(port: int) -> dict[str, tuple[str, int, int]]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = model_service_pb2_grpc.ModelServiceStub(channel).GetStatus(mpb.GetStatusRequest(), timeout=30)
        return {
            s.state.model: (s.state.serving_version, s.served_generation, s.state.generation) for s in answer.models
        }

    try:
        ports = []
        for lines in logs:
            wait_for(lambda lines=lines: any("regserve listening on" in line for line in lines), "every replica start")
            ports.append(int(re.search(r"listening on 127\.0\.0\.1:(\d+)", "".join(lines)).group(1)))
        for port in ports:
            # Every replica routes v1 of each demo model, by the generation the registry holds.
            wait_for(
                lambda port=port: (
                    all(answer[0] == "v1" and answer[1] == answer[2] for answer in serving(port).values())
                    and set(serving(port)) == set(DEMO_MODELS)
                ),
                f"the replica on port {port} serve every demo model",
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    registry = ModelRegistry(s3_url)
    for name in DEMO_MODELS:
        assert [v.version for v in registry.list_versions(name)] == ["v1"]
        assert [h.action for h in registry.read_state(name).history] == ["promote"]
    assert [p.returncode for p in processes] == [0, 0, 0]
