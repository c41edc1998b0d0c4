"""Compile proto/regserve/v1/*.proto into generated/regserve/v1 (stubs and .pyi files).

Usage: python scripts/generate_stubs.py [--check] [OUT_DIR]

With --check nothing is written: the script exits 1 when the files in OUT_DIR
differ from a fresh generation, so CI can tell stale stubs from fresh ones.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = Path("regserve") / "v1"
INIT_TEXT = '"""Stubs generated from proto/regserve/v1 by scripts/generate_stubs.py; do not edit."""\n'


def _include_dirs() -> list[str]:
    """The include path: our protos and protobuf's well-known types."""
    return [str(PROTO_ROOT), str(resources.files("grpc_tools") / "_proto")]


def generate(out_dir: Path) -> None:
    """Write a fresh generation of the stubs into ``out_dir/regserve/v1``."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
        args += [f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        target = out_dir / PACKAGE
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(tmp) / PACKAGE, target)
        (target / "__init__.py").write_text(INIT_TEXT)
        (target / "py.typed").write_text("")


def differences(committed: Path, fresh: Path) -> list[str]:
    """Relative paths that differ between two generated trees."""
    cmp = filecmp.dircmp(committed, fresh, ignore=["__pycache__"])
    diffs = [*cmp.left_only, *cmp.right_only]
    diffs += [name for name in cmp.common_files if not filecmp.cmp(committed / name, fresh / name, shallow=False)]
    return sorted(diffs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", default=str(ROOT / "generated"))
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    if not args.check:
        generate(out_dir)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        diffs = differences(out_dir / PACKAGE, Path(tmp) / PACKAGE)
    if diffs:
        print("stale generated stubs (run `make generate`):", ", ".join(diffs), file=sys.stderr)
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
