"""The regserve client library: NumPy in, NumPy out, typed exceptions.

from regserve.client import RegressionClient

with RegressionClient("127.0.0.1:50051") as client:
    prediction = client.predict("diabetes", X)   # X: ndarray (n_rows, 10)
    prediction.values                            # ndarray (n_rows,)

with ModelAdminClient("127.0.0.1:50051") as admin:
    admin.promote("diabetes", "v2", reason="better validation mse")
"""

from regserve.client._admin import ModelAdminClient
from regserve.client._channel import bearer_metadata, tls_credentials
from regserve.client._client import Prediction, RegressionClient
from regserve.client._exceptions import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RegserveError,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "ModelAdminClient",
    "NotFound",
    "PermissionDenied",
    "Prediction",
    "RegressionClient",
    "RegserveError",
    "ResourceExhausted",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "bearer_metadata",
    "tls_credentials",
]
