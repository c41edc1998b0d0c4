"""regserve's server: servicers, estimators, training, the model registry and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("regserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
