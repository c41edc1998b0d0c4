"""The domain knows no transport: nothing under models/ or registry/ imports gRPC, protobuf or HTTP.

Every import is found by walking each module's syntax tree, so imports inside
functions, under ``TYPE_CHECKING`` and relative ones count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[2] / "server"
PACKAGE = "regserve.server"
DOMAIN = ("models", "registry")
FORBIDDEN = (
    "grpc*",  # grpc, grpc_status, grpc_health, grpc_reflection, ...
    "regserve.v1",
    "google.protobuf",
    "google.rpc",
    "starlette",
    "uvicorn",
    *(f"{PACKAGE}.{layer}" for layer in ("rpc", "edge", "gateway", "runtime", "cli")),
)


def imported_names(source: str, package: str) -> set[str]:
    """Every module ``source`` imports, made absolute against ``package`` (the module's own package).

    ``from a import b`` gives both ``a`` and ``a.b``, since ``b`` may be a module;
    ``import_module("x")`` and ``__import__("x")`` with a literal name give ``x``.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if called in ("import_module", "__import__"):
                names.add(str(node.args[0].value))
    return names


def forbidden(name: str) -> bool:
    """True when importing ``name`` would tie the domain to a transport or an outer layer."""
    for rule in FORBIDDEN:
        if rule.endswith("*"):
            if name.startswith(rule[:-1]):
                return True
        elif name == rule or name.startswith(f"{rule}."):
            return True
    return False


def _package_of(path: Path) -> str:
    parts = path.relative_to(SERVER).parent.parts
    return ".".join((PACKAGE, *parts))


DOMAIN_MODULES = sorted(path for layer in DOMAIN for path in (SERVER / layer).rglob("*.py"))


def test_the_domain_has_modules_to_check():
    assert {p.relative_to(SERVER).parts[0] for p in DOMAIN_MODULES} == set(DOMAIN)
    assert len(DOMAIN_MODULES) > 8


@pytest.mark.parametrize("path", DOMAIN_MODULES, ids=[str(p.relative_to(SERVER)) for p in DOMAIN_MODULES])
def test_a_domain_module_imports_no_transport(path):
    bad = sorted(name for name in imported_names(path.read_text(), _package_of(path)) if forbidden(name))
    assert not bad, f"{path.relative_to(SERVER)} imports {', '.join(bad)}"


def test_the_walk_sees_every_kind_of_import():
    source = (
        "import numpy\n"
        "from . import routing\n"
        "from .. import errors\n"
        "if TYPE_CHECKING:\n"
        "    from regserve.v1 import types_pb2\n"
        "def f():\n"
        "    import grpc_status.rpc_status\n"
        "    from regserve.server import rpc\n"
        "    importlib.import_module('starlette.requests')\n"
    )
    names = imported_names(source, "regserve.server.registry")
    assert {"numpy", "regserve.server.registry.routing", "regserve.server.errors"} <= names
    assert sorted(n for n in names if forbidden(n)) == [
        "grpc_status.rpc_status",
        "regserve.server.rpc",
        "regserve.v1",
        "regserve.v1.types_pb2",
        "starlette.requests",
    ]
    assert not forbidden("regserve.server.registry.routing") and not forbidden("regserve.server.errors")
