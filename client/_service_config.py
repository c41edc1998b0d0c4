"""The gRPC service config regserve's clients use unless given another.

It balances ``round_robin`` over every address the target resolves to (all the pods
behind a headless Service, or each address of ``ipv4:a,b,c``) and lets gRPC retry,
with its own bounded ``retryPolicy``, the calls that change nothing on the server
when they fail with UNAVAILABLE: the replica was unreachable, draining, or did not
serve the model yet, and another attempt may land elsewhere.  Train and the
registry's changes are never retried, so a change is never applied twice.

CANCELLED is retried for the same calls: when a replica's drain ends and it closes its
listener, grpcio's server cancels the calls that had reached it but not yet started
(they race the GOAWAY it sends), and for a read another replica can answer instead.

BatchPredict is retried too: gRPC replays a stream only until it is committed, that
is before its first response arrives and while the chunks sent fit the per-call
retry buffer (``grpc.per_rpc_retry_buffer_size``, 256 KiB by default), and a
prediction changes nothing, so the replay cannot duplicate an effect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2

from regserve.v1 import model_service_pb2, regression_service_pb2

__all__ = ["RETRIED_METHODS", "RETRY_POLICY", "default_service_config", "service_config_json"]

_REGRESSION = regression_service_pb2.DESCRIPTOR.services_by_name["RegressionService"]
_MODEL = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
# grpcio's packages type their descriptors as upb's own classes.
_HEALTH = cast(ServiceDescriptor, health_pb2.DESCRIPTOR.services_by_name["Health"])

RETRIED_METHODS: tuple[MethodDescriptor, ...] = (
    _REGRESSION.methods_by_name["Predict"],
    _REGRESSION.methods_by_name["BatchPredict"],
    _REGRESSION.methods_by_name["ModelInfo"],
    _MODEL.methods_by_name["ListModels"],
    _MODEL.methods_by_name["ListVersions"],
    _MODEL.methods_by_name["GetVersion"],
    _MODEL.methods_by_name["GetStatus"],
    _HEALTH.methods_by_name["Check"],
)
"""The methods that only read: retried on UNAVAILABLE and CANCELLED by the default service config."""

RETRY_POLICY: Mapping[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
}
"""At most 4 attempts, about 0.1 s, 0.2 s, then 0.4 s apart (grpcio's core adds up to 20 % jitter).

The call's deadline covers every attempt, so retries never make a call outlast its timeout."""


def default_service_config() -> dict[str, Any]:
    """A fresh copy of the default service config, as a dict a caller may change and pass back."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": method.containing_service.full_name, "method": method.name}
                    for method in RETRIED_METHODS
                ],
                "retryPolicy": dict(RETRY_POLICY, retryableStatusCodes=list(RETRY_POLICY["retryableStatusCodes"])),
            }
        ],
    }


def service_config_json(service_config: Mapping[str, Any] | str | None) -> str:
    """The service config as the JSON text of gRPC's ``grpc.service_config`` channel option.

    ``None`` gives the default; a mapping or a JSON object text replaces it whole
    (``{}`` is gRPC's own behaviour: ``pick_first``, no retries).  Raises ValueError
    when the text is not JSON or not an object.
    """
    if service_config is None:
        return json.dumps(default_service_config())
    if isinstance(service_config, str):
        try:
            service_config = json.loads(service_config)
        except json.JSONDecodeError as exc:
            raise ValueError(f"service_config is not JSON: {exc}") from None
    if not isinstance(service_config, Mapping):
        raise ValueError(f"service_config must be a JSON object, got {type(service_config).__name__}")
    return json.dumps(dict(service_config))
