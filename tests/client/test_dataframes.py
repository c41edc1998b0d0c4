"""pandas DataFrames in the blocking client: features named by the columns, rows matched by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regserve.client import InvalidArgument, ModelAdminClient, VersionFeaturesDiffer

NAMES = ["bedrooms", "bathrooms", "sqft"]


@pytest.fixture
def houses() -> pd.DataFrame:
    """60 houses whose price weighs bedrooms, bathrooms and sqft very differently, seeded."""
    rng = np.random.default_rng(20261207)
    frame = pd.DataFrame(
        {
            "bedrooms": rng.integers(1, 6, 60).astype(float),
            "bathrooms": rng.integers(1, 4, 60).astype(float),
            "sqft": rng.uniform(50, 250, 60),
        }
    )
    frame["price"] = frame[NAMES].to_numpy() @ [10.0, -20.0, 2.0] + 30.0 + rng.normal(scale=0.5, size=60)
    return frame


def test_train_names_the_features_by_the_columns(client, houses):
    response = client.train("houses", houses[["bedrooms", "sqft"]], houses["price"])
    assert list(response.model_version.feature_names) == ["bedrooms", "sqft"]
    # Names given win over the columns'.
    response = client.train("houses", houses[["bedrooms", "sqft"]], houses["price"], feature_names=["a", "b"])
    assert list(response.model_version.feature_names) == ["a", "b"]
    assert list(client.train("plain", houses[NAMES].to_numpy(), houses["price"]).model_version.feature_names) == [
        "x0",
        "x1",
        "x2",
    ]


def test_predict_and_batch_predict_match_the_columns_by_name(client, houses):
    client.train("houses", houses[NAMES], houses["price"])
    expected = client.predict("houses", houses[NAMES].to_numpy()).values
    shuffled = houses[["sqft", "bathrooms", "bedrooms"]]
    np.testing.assert_allclose(client.predict("houses", shuffled).values, expected, rtol=1e-12)
    np.testing.assert_allclose(client.batch_predict("houses", shuffled, chunk_rows=16), expected, rtol=1e-12)
    # Intervals come on the named path too.
    bounded = client.predict("houses", shuffled, interval=0.9)
    reference = client.predict("houses", houses[NAMES].to_numpy(), interval=0.9)
    np.testing.assert_allclose(bounded.prediction_lower, reference.prediction_lower, rtol=1e-12)


def test_columns_that_are_not_the_features_are_refused(client, houses):
    client.train("houses", houses[NAMES], houses["price"])
    with pytest.raises(InvalidArgument) as refused:
        client.predict("houses", houses[["bedrooms", "sqft"]])
    assert refused.value.reason == "MISSING_FEATURE"
    with pytest.raises(InvalidArgument) as refused:
        client.predict("houses", houses)
    assert refused.value.reason == "UNKNOWN_FEATURE"
    with pytest.raises(ValueError, match="the table has no column 'bathrooms'"):
        client.batch_predict("houses", houses[["bedrooms", "sqft"]])
    with pytest.raises(ValueError, match="the model has no feature 'price'"):
        client.batch_predict("houses", houses)
    with pytest.raises(ValueError, match="names column 'sqft' more than once"):
        client.predict("houses", houses[["sqft", "bedrooms", "sqft"]])


def test_batch_predict_refuses_a_split_answering_with_other_features(client, target, houses):
    client.train("houses", houses[NAMES], houses["price"])
    client.train("houses", houses[NAMES[::-1]], houses["price"], promote=False)
    with ModelAdminClient(target) as admin:
        admin.set_split("houses", {"v2": 100.0})
    with pytest.raises(ValueError, match="houses v2 answered, whose features"):
        client.batch_predict("houses", houses[NAMES])
    # A split's version of another feature count refuses the first chunk before its answer can be compared.
    client.train("houses", houses[NAMES[:2]], houses["price"], promote=False)
    with ModelAdminClient(target) as admin:
        admin.set_split("houses", {"v3": 100.0})
    with pytest.raises(VersionFeaturesDiffer, match=r"houses answered with a version of 2 features, not v1 \(bedrooms"):
        client.batch_predict("houses", houses[NAMES])
    with ModelAdminClient(target) as admin:
        admin.set_split("houses", {"v2": 100.0})
    expected = client.predict("houses", houses[NAMES].to_numpy(), version="v1").values
    np.testing.assert_allclose(client.batch_predict("houses", houses[NAMES], version="v2"), expected, rtol=1e-8)
