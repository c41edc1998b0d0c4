"""Class labels: natural order of the classes and the classification metrics per label."""

import numpy as np
import pytest
from sklearn import metrics as skm

from regserve.server.models.training import TrainSpec
from regserve.server.models.training.sampling import RowGroups
from tests.server.models.training.helpers import train


def test_classification_metrics_and_natural_label_order():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 2))
    y = np.digitize(X[:, 0] + 0.3 * rng.normal(size=300), [-0.5, 0.5])
    labels = np.array(["9", "10", "-2"])[y]
    result = train(TrainSpec(kind="logistic", alpha=0.1, validation_fraction=0.3), X, labels)
    assert result.metadata["classes"] == ["-2", "9", "10"]
    held_out = RowGroups(0, 0.3, 1).take(0, 300)[0] < 0
    index = np.array([{"-2": 0, "9": 1, "10": 2}[label] for label in labels])
    proba = result.model.predict_proba(X[held_out])
    predicted = result.model.predict(X[held_out]).astype(int)
    val = result.metadata["validation_metrics"]
    assert val["accuracy"] == pytest.approx(skm.accuracy_score(index[held_out], predicted), rel=1e-12)
    np.testing.assert_allclose(val["log_loss"], skm.log_loss(index[held_out], proba, labels=[0, 1, 2]), rtol=1e-9)
    assert val["confusion_matrix"] == skm.confusion_matrix(index[held_out], predicted, labels=[0, 1, 2]).tolist()
    assert [c["label"] for c in val["per_class"]] == ["-2", "9", "10"]
    assert sum(c["support"] for c in val["per_class"]) == held_out.sum()
