"""The embedded default: an empty registry gets demo models that answer at once."""

from __future__ import annotations

import numpy as np

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
