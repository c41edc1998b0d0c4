"""Helpers for the edge tests: the ErrorInfo reason and RetryInfo delay of a failed call."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def details_of(error: grpc.RpcError) -> tuple[str, float | None]:
    """The ``ErrorInfo.reason`` (or "") and the ``RetryInfo`` delay in seconds (or None) of a failed call."""
    status = rpc_status.from_call(error)
    reason, delay = "", None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, delay
