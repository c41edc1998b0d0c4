"""Domain errors raised by regserve's estimators, training and registry.

The domain knows no transport: these exceptions carry a machine-readable
``reason`` (UPPER_SNAKE, sent as ``google.rpc.ErrorInfo.reason``) and, for bad
input, field violations (sent as ``google.rpc.BadRequest``).  The single
mapping onto gRPC status codes lives in ``regserve.server.rpc.status``.

Exception tree::

    RegserveError
    ├── InvalidInput          bad request data (INVALID_ARGUMENT)
    ├── NotFound              unknown model, version or feature (NOT_FOUND)
    │   ├── UnknownModel      no model of that name (UNKNOWN_MODEL)
    │   └── UnknownVersion    the model has no version of that name (UNKNOWN_VERSION)
    ├── AlreadyExists         the thing to create exists (ALREADY_EXISTS)
    ├── FailedPrecondition    the registry's state forbids it (FAILED_PRECONDITION)
    │   ├── IntegrityError    a stored version fails its checksum or probe
    │   └── VersionFrozen     the version is frozen (VERSION_FROZEN)
    ├── ResourceExhausted     a size or rate limit was hit (RESOURCE_EXHAUSTED)
    ├── Unauthenticated       no valid credentials came with the call (UNAUTHENTICATED)
    ├── PermissionDenied      the caller's role may not make this call (PERMISSION_DENIED)
    ├── DeadlineExceeded      the caller's deadline ran out (DEADLINE_EXCEEDED)
    ├── Cancelled             the caller went away or cut the stream (CANCELLED)
    └── Unavailable           nothing can answer yet (UNAVAILABLE)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "RegserveError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "UnknownModel",
    "UnknownVersion",
    "VersionFrozen",
]

FieldViolation = tuple[str, str]
"""A ``(field, description)`` pair naming the offending request field."""


class RegserveError(Exception):
    """Base class of every error regserve reports to a caller.

    Parameters
    ----------
    message : str
        A sentence for a human, safe to send to the client.
    reason : str
        UPPER_SNAKE identifier a program can branch on.
    violations : sequence of (field, description), optional
        The request fields at fault, for bad input.
    metadata : mapping of str to str, optional
        Extra facts for ``ErrorInfo.metadata`` (model name, row index, ...).
    """

    default_reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.violations = tuple(violations)
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidInput(RegserveError):
    """The request data is malformed: wrong shape, NaN, unknown label, ..."""

    default_reason = "INVALID_INPUT"


class NotFound(RegserveError):
    """A named model, version or feature does not exist."""

    default_reason = "NOT_FOUND"


class UnknownModel(NotFound):
    """No model of that name exists (``model`` is the name asked for)."""

    default_reason = "UNKNOWN_MODEL"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"Model {model!r} does not exist.",
            violations=[("model", f"no model named {model!r}")],
            metadata={"model": model},
        )
        self.model = model


class UnknownVersion(NotFound):
    """The model exists but has no version of that name; ``field`` names the request field."""

    default_reason = "UNKNOWN_VERSION"

    def __init__(self, model: str, version: str, field: str = "version") -> None:
        super().__init__(
            f"Model {model!r} has no version {version!r}.",
            violations=[(field, f"no version {version!r} of model {model!r}")],
            metadata={"model": model, "version": version},
        )
        self.model = model
        self.version = version


class AlreadyExists(RegserveError):
    """The thing the call would create exists already."""

    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(RegserveError):
    """The call is well-formed but the current state forbids it."""

    default_reason = "FAILED_PRECONDITION"


class IntegrityError(FailedPrecondition):
    """A stored version fails its checksum or its stored probe."""

    default_reason = "INTEGRITY_CHECK_FAILED"


class VersionFrozen(FailedPrecondition):
    """The version is frozen: neither routed, nor predicted by name, nor promoted.

    ``advice``, when given, follows the sentence after a semicolon ("unfreeze it first").
    """

    default_reason = "VERSION_FROZEN"

    def __init__(self, model: str, version: str, *, field: str = "version", advice: str = "") -> None:
        sentence = f"Version {version} of model {model!r} is frozen"
        super().__init__(
            f"{sentence}; {advice}." if advice else f"{sentence}.",
            violations=[(field, f"version {version} is frozen")],
            metadata={"model": model, "version": version},
        )
        self.model = model
        self.version = version


class ResourceExhausted(RegserveError):
    """A size, concurrency or rate limit was reached.

    ``retry_after`` (seconds), when set, is sent as ``google.rpc.RetryInfo``.
    """

    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Unauthenticated(RegserveError):
    """The call carries no credentials, or credentials the server does not know."""

    default_reason = "UNAUTHENTICATED"


class PermissionDenied(RegserveError):
    """The caller is known, but its role does not allow this call."""

    default_reason = "PERMISSION_DENIED"


class DeadlineExceeded(RegserveError):
    """The caller's deadline ran out before the work finished."""

    default_reason = "DEADLINE_EXCEEDED"


class Cancelled(RegserveError):
    """The caller cancelled the call or cut its stream short."""

    default_reason = "CANCELLED"


class Unavailable(RegserveError):
    """Nothing can answer yet, for example while no model is loaded."""

    default_reason = "UNAVAILABLE"
