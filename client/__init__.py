"""The regserve client library: NumPy in, NumPy out, typed exceptions.

from regserve.client import RegressionClient

with RegressionClient("127.0.0.1:50051") as client:
    prediction = client.predict("diabetes", X)   # X: ndarray (n_rows, 10)
    prediction.values                            # ndarray (n_rows,)

with ModelAdminClient("127.0.0.1:50051") as admin:
    admin.promote("diabetes", "v2", reason="better validation mse")

For asyncio (grpc.aio, Starlette, FastAPI, aiohttp), ``regserve.client.aio`` has
``AsyncRegressionClient`` and ``AsyncModelAdminClient``: the same calls, awaited.

Clients balance ``round_robin`` over every address of their target
(``dns:///regserve-headless:50051``, ``ipv4:10.0.0.1:50051,10.0.0.2:50051``) and retry
the calls that change nothing on UNAVAILABLE; ``options`` and ``service_config`` change that.
"""

from regserve.client._admin import ModelAdminClient
from regserve.client._calls import Prediction, VersionFeaturesDiffer
from regserve.client._channel import bearer_metadata, open_channel, tls_credentials
from regserve.client._client import RegressionClient
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
from regserve.client._service_config import default_service_config

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
    "VersionFeaturesDiffer",
    "bearer_metadata",
    "default_service_config",
    "open_channel",
    "tls_credentials",
]
