"""Server settings: one object, fed from command-line flags with REGSERVE_* environment defaults.

Each setting is declared once, as a field of ``Settings`` with its type and default,
and its help text in ``_HELP``; ``add_arguments`` turns the fields into argparse
flags whose defaults come from the environment (``--model-dir`` reads
``REGSERVE_MODEL_DIR``), ``Settings.from_args`` builds the settings object from the
parsed flags, and ``Settings.check`` refuses combinations that cannot be served.
"""

from __future__ import annotations

import argparse
import math
import os
import ssl
from dataclasses import dataclass, field, fields

from regserve.server.registry.storage import check_location

__all__ = ["Settings", "add_arguments"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start.  Defaults are the embedded local start."""

    host: str = "127.0.0.1"
    port: int = 50051
    model_dir: str = "var/models"
    max_workers: int = 16
    predict_threads: int = 2
    health_threads: int = 2
    admin_threads: int = 4
    train_threads: int = 2
    reflection_threads: int = 2
    workers: int = 1
    reuse_port: bool = False
    max_message_mb: int = 64
    drain_seconds: float = 5.0
    grace_seconds: float = 10.0
    poll_interval: float = 2.0
    demo_models: bool = True
    log_level: str = "INFO"
    access_log: bool = True
    access_log_peer: bool = False
    echo_request_id: bool = True
    metrics_port: int = -1
    otlp_endpoint: str = ""
    gateway_port: int = -1
    gateway_header_timeout: float = 10.0
    gateway_body_timeout: float = 30.0
    gateway_idle_timeout: float = 5.0
    gateway_max_connections: int = 1024
    gateway_max_connections_per_peer: int = 256
    gateway_max_uploads: int = 8
    blas_threads: int = 1
    pin_cpus: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    auth: bool = False
    tokens_file: str = ""
    tokens: str = field(default="", repr=False)
    rate_limit: float = 0.0
    rate_burst: int = 20
    max_predict_rows: int = 1_000_000
    drift_window: int = 10_000
    drift_threshold: float = 0.2
    max_train_memory_mb: int = 2048
    max_train_gflop: int = 200
    spool_dir: str = ""
    max_concurrent_streams: int = 100
    max_streams_per_peer: int = 8
    stream_idle_timeout: float = 60.0
    max_concurrent_rpcs: int = 0
    max_connections: int = 2048
    max_connection_age: float = 0.0
    parent_pid: int = 0

    def __post_init__(self) -> None:
        # A path object is accepted where a location is expected; URLs such as s3://bucket/prefix stay strings.
        object.__setattr__(self, "model_dir", os.fspath(self.model_dir))

    @property
    def address(self) -> str:
        """The ``host:port`` the gRPC server binds, with IPv6 hosts bracketed."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * MIB

    @property
    def tls(self) -> bool:
        """True when the gRPC port speaks TLS."""
        return bool(self.tls_cert or self.tls_key)

    @property
    def auth_enabled(self) -> bool:
        """True when calls must carry a bearer token."""
        return self.auth or bool(self.tokens_file) or bool(self.tokens.strip())

    def check(self) -> None:
        """Raise ValueError for settings that cannot be served, before anything is started or written."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Unreadable):
                raise ValueError(str(value))
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        check_location(self.model_dir)
        for name in ("drain_seconds", "grace_seconds", "max_connection_age"):
            if not 0 <= getattr(self, name) < math.inf:  # written so that NaN fails it too
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number of seconds, 0 or more")
        if self.predict_threads < 0:
            raise ValueError("--predict-threads must be 0 (Predict on the --max-workers threads) or more")
        for name in ("health_threads", "admin_threads", "train_threads", "reflection_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 (on the --max-workers threads) or more")
        for name in (
            "max_concurrent_streams",
            "max_streams_per_peer",
            "stream_idle_timeout",
            "gateway_max_connections_per_peer",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 (no limit) or more")
        for name in ("gateway_header_timeout", "gateway_body_timeout", "gateway_idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be above 0 seconds")
        for name in ("gateway_max_connections", "gateway_max_uploads", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.drift_window < 0 or 0 < self.drift_window < 10:
            raise ValueError("--drift-window must be 0 (off) or at least 10 rows (it slides in ten steps)")
        if not 0 < self.drift_threshold < math.inf:
            raise ValueError("--drift-threshold must be a PSI above 0")
        if self.max_train_memory_mb < 1 or self.max_train_gflop < 1:
            raise ValueError("--max-train-memory-mb and --max-train-gflop must be at least 1")
        if not 0 < self.poll_interval < math.inf:
            raise ValueError("--poll-interval must be a finite number of seconds above 0")
        if self.max_message_mb < 1:
            raise ValueError("--max-message-mb must be at least 1")
        if not 0 <= self.rate_limit < math.inf:
            raise ValueError("--rate-limit must be 0 (no limit) or a finite number of calls a second")
        if self.rate_burst < 1:
            raise ValueError("--rate-burst must be at least 1")
        if self.max_predict_rows < 1:
            raise ValueError("--max-predict-rows must be at least 1")
        if self.tls_client_ca and not self.tls:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.tls:
            _check_tls_files(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.gateway_port >= 0 and self.tls:
            # The embedded gateway's streaming routes call the gRPC port in plaintext.
            raise ValueError(
                "the embedded REST gateway speaks plaintext to the gRPC port; with TLS on, run "
                "`regserve gateway --upstream HOST:PORT --tls-ca ...` as its own process"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Build settings from flags parsed by a parser set up with ``add_arguments``."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**values)


_HELP = {
    "host": "address to bind (use 0.0.0.0 or :: to listen beyond loopback)",
    "port": "gRPC port; 0 picks a free one",
    "model_dir": "registry holding the model versions: a directory, a file:// URL or s3://bucket/prefix "
    "(needs regserve[s3]; endpoint and keys from the usual AWS_* variables)",
    "max_workers": "threads answering BatchPredict streams, and the methods of every pool below set to 0",
    "predict_threads": "threads of their own for Predict and ModelInfo; a process's threads share one interpreter "
    "lock, so 2 is usually enough (more cores want more --workers); 0: they share the --max-workers threads",
    "health_threads": "threads of their own for grpc.health.v1 Check and Watch, so probes answer under any load; "
    "0: on the --max-workers threads",
    "admin_threads": "threads of their own for the ModelService methods (registry reads and changes); "
    "0: on the --max-workers threads",
    "train_threads": "threads of their own for Train, so slow uploads hold up only other Trains; "
    "0: on the --max-workers threads",
    "reflection_threads": "threads of their own for server reflection (grpcurl), open to callers without a token; "
    "0: on the --max-workers threads",
    "workers": "server processes sharing the ports (SO_REUSEPORT); each holds the models, follows the registry "
    "and has its own rate limits",
    "reuse_port": "let other processes bind the same port (SO_REUSEPORT); --workers sets it for its workers",
    "max_message_mb": "largest request or response message, in MiB",
    "drain_seconds": "seconds the server keeps accepting and answering calls after the first SIGTERM or SIGINT, "
    "with health NOT_SERVING, so probes and load balancers move away before the listener closes; 0: close at once",
    "grace_seconds": "seconds calls in flight get to finish once the listener has closed (after the drain); "
    "then they are cancelled and the process exits 0; a second SIGTERM or SIGINT cancels them at once (exit 1)",
    "poll_interval": "seconds between checks of the registry for changes made by other replicas",
    "demo_models": "train the demo models when the registry is empty",
    "log_level": "logging level (DEBUG, INFO, WARNING, ERROR)",
    "access_log": "write one JSON line per request to stderr",
    "access_log_peer": "add the caller's address to each access-log line (grpcio drops the GIL twice to read it)",
    "echo_request_id": "return x-request-id in the response metadata (trailing for unary calls, initial for streams)",
    "metrics_port": "HTTP port of the Prometheus /metrics endpoint; 0 picks a free one, -1 turns it off",
    "otlp_endpoint": "base URL of an OTLP/HTTP collector (http://HOST:4318) that receives OpenTelemetry traces, "
    "a span per RPC and per REST request (needs the tracing extra); empty: traces only when "
    "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set",
    "gateway_port": "HTTP port of the REST/JSON gateway served inside the server; 0 picks a free one, -1: off",
    "gateway_header_timeout": "seconds an HTTP client of the gateway has to send a request's headers",
    "gateway_body_timeout": "seconds a request body may stall while the gateway waits for it",
    "gateway_idle_timeout": "seconds the gateway keeps an idle keep-alive connection open between requests",
    "gateway_max_connections": "HTTP connections the gateway holds open at once (at most half the open-file "
    "limit); more are answered 503 and closed",
    "gateway_max_connections_per_peer": "HTTP connections one client host may hold open at once; more are "
    "answered 503 and closed; raise it, or set 0 (no limit), behind a proxy whose connections all come from one host",
    "gateway_max_uploads": "streaming uploads (NDJSON Train and BatchPredict bodies) the gateway takes at once; "
    "more are refused 429",
    "pin_cpus": (
        "run each server process on one CPU: 'auto' (the CPUs this process may use) or a list such as 0,2; "
        "worker i takes the (i mod n)-th; empty: the OS places the threads"
    ),
    "blas_threads": "threads NumPy's BLAS may use (0 keeps its default); one leaves the cores to the RPC threads",
    "tls_cert": "PEM certificate chain of the server; with --tls-key, the gRPC port speaks only TLS",
    "tls_key": "PEM private key of the server",
    "tls_client_ca": "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)",
    "auth": "require bearer tokens (implied by --tokens-file or REGSERVE_TOKENS)",
    "tokens_file": "file of role:token lines (roles: predict, admin) or JSON",
    "tokens": "role:token pairs separated by commas; environment only, so tokens stay out of ps",
    "rate_limit": "calls per second allowed to each client (token, else peer address); 0 turns limits off",
    "rate_burst": "calls a client may make at once before the rate limit applies",
    "max_predict_rows": "most rows in one Predict request or BatchPredict message",
    "drift_window": "rows of each version's sliding drift window (the most recent tallied ones, in ten steps); "
    "drift is reported once a tenth of it has been tallied; of a version's predicted rows at most 20,000 a second "
    "are tallied, a uniform sample beyond that; 0 turns drift detection off",
    "drift_threshold": "the population stability index above which a feature is flagged as drifted",
    "max_train_memory_mb": "most memory one Train may need at its peak, in MiB, estimated from the spec, the "
    "features, the classes and the rows as they arrive; a Train that needs more is refused RESOURCE_EXHAUSTED "
    "TRAINING_TOO_LARGE before it allocates",
    "max_train_gflop": "most work one Train may need, in billions of floating-point operations, estimated the "
    "same way (epochs x rows x features for gd and sgd, a features^3 solve per fold for the closed form, "
    "Newton's (classes x features)^3 solve per iteration); more is refused TRAINING_TOO_LARGE before fitting",
    "spool_dir": "directory of the files Train spools rows to; each server process uses a subdirectory of its "
    "own and at start removes those of processes that are gone; empty: regserve-spool-<uid> in the system's "
    "temporary directory",
    "max_concurrent_streams": "HTTP/2 streams per connection (grpc.max_concurrent_streams); 0 keeps grpc's default",
    "max_streams_per_peer": "Train and BatchPredict streams open at once from one peer host (the HTTP client's "
    "through the embedded gateway); more are refused RESOURCE_EXHAUSTED; 0: no limit",
    "stream_idle_timeout": "seconds a stream may wait on its client (no message sent, no answer taken) before "
    "it is ended DEADLINE_EXCEEDED; 0: never",
    "max_concurrent_rpcs": "calls in progress before new ones get RESOURCE_EXHAUSTED; 0 means no limit",
    "max_connections": "connections the gRPC port holds open at once (grpc.max_allowed_incoming_connections; at "
    "most a quarter of the open-file limit); more are closed as they arrive, and one that has not finished its "
    "handshake within 10 s is closed",
    "max_connection_age": "seconds (grpc adds +-10 %% jitter) after which the server asks a client to reconnect "
    "(GOAWAY); calls in flight still finish, and clients resolve their target again, so long-lived balanced "
    "clients spread to replicas added since; 0: never",
    "parent_pid": "the pid of this process's parent: stop once the parent is gone (set by --workers); 0: never",
}

_ENV_ONLY = frozenset({"tokens"})
"""Settings read from their REGSERVE_* variable only: secrets must not show in the process list."""


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class _Unreadable:
    """A REGSERVE_* value that does not read as its setting's type: ``Settings.check`` refuses it, naming
    the variable, unless the flag was given (so ``regserve health`` and the other commands still run)."""

    def __init__(self, variable: str, raw: str, kind: str) -> None:
        self.message = f"{variable}={raw!r} is not {kind}; fix or unset it, or give the flag"

    def __str__(self) -> str:
        return self.message


def _env_default(name: str, default):
    variable = f"REGSERVE_{name.upper()}"
    raw = os.environ.get(variable)
    if raw is None:
        return default
    if isinstance(default, bool):
        word = raw.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        return _Unreadable(variable, raw, "a boolean (1/true/yes/on or 0/false/no/off)")
    try:
        return type(default)(raw)
    except ValueError:
        kind = {int: "an integer", float: "a number"}.get(type(default), type(default).__name__)
        return _Unreadable(variable, raw, kind)


def _check_tls_files(cert: str, key: str, client_ca: str) -> None:
    """ValueError naming the flag when the TLS files cannot serve: a missing half, an unreadable or
    mismatched PEM file; grpc itself would only fail to bind the port."""
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key go together: give both")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def no_password() -> str:
        # Without a callable, OpenSSL would prompt on the terminal for an encrypted key's pass phrase.
        raise ValueError(f"--tls-key {key} is encrypted; grpc needs a key without a pass phrase")

    try:
        context.load_cert_chain(cert, key, password=no_password)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate and its private key: {exc}"
        ) from None
    if client_ca:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--tls-client-ca {client_ca} is not a PEM CA certificate: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; each flag's default is its REGSERVE_* variable, else the built-in default."""
    defaults = Settings()
    for f in fields(Settings):
        default = _env_default(f.name, getattr(defaults, f.name))
        if f.name in _ENV_ONLY:
            parser.set_defaults(**{f.name: default})
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_HELP[f.name]} (env REGSERVE_{f.name.upper()}; default: %(default)s)"
        if isinstance(getattr(defaults, f.name), bool):
            parser.add_argument(
                flag, dest=f.name, default=default, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            kind = type(getattr(defaults, f.name))  # the setting's type, also when its variable is unreadable
            parser.add_argument(flag, dest=f.name, default=default, type=kind, help=help_text)
