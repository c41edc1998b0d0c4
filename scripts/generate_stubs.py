"""Compile proto/regserve/v1/*.proto into generated/regserve/v1, proto/inference/*.proto into generated/inference
and proto/grpc/reflection/v1/*.proto into generated/grpc/reflection/v1.

Usage: python scripts/generate_stubs.py [--check | --stage-googleapis] [OUT_DIR]

With --check nothing is written: the script exits 1 when the files in OUT_DIR
differ from a fresh generation, so CI can tell stale stubs from fresh ones.

The contract imports ``google/api/annotations.proto``.  Those files come from the
installed googleapis-common-protos package, never from a committed copy: they are
staged into build/googleapis (git-ignored), which is both protoc's include
directory here and the second module of buf.yaml; --stage-googleapis does only that.

Beside the stubs the script writes ``regserve_v1.binpb``, a FileDescriptorSet of
the contract with its source info, so the REST gateway can read the proto comments
(the descriptors embedded in the ``_pb2`` modules carry none).

proto/inference holds the Open Inference Protocol's contract under its upstream package
name, ``inference``; its stubs are installed as ``regserve.inference``, so the import
protoc writes into its ``_pb2_grpc`` module is rewritten to that name.

proto/grpc/reflection/v1 holds gRPC's server reflection v1 contract, copied unchanged from
grpc-proto because grpcio-reflection ships only v1alpha; its stubs are installed as
``regserve.reflection.v1`` (the name ``grpc`` is grpcio's package), rewritten the same way.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

import google.api.annotations_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = Path("regserve") / "v1"
OIP_PACKAGE = Path("inference")
OIP_IMPORT = ("from inference import ", "from regserve.inference import ")
REFLECTION_PACKAGE = Path("grpc") / "reflection" / "v1"
REFLECTION_IMPORT = ("from grpc.reflection.v1 import ", "from regserve.reflection.v1 import ")
GOOGLEAPIS_DIR = ROOT / "build" / "googleapis"
GOOGLEAPIS_PROTOS = ("google/api/annotations.proto", "google/api/http.proto")
PACKAGES = (PACKAGE, OIP_PACKAGE, REFLECTION_PACKAGE)
DESCRIPTOR_SET = "regserve_v1.binpb"
INIT_TEXT = '"""Stubs generated from proto/{} by scripts/generate_stubs.py; do not edit."""\n'


def stage_googleapis(dest: Path = GOOGLEAPIS_DIR) -> Path:
    """Copy the google/api protos the contract imports from googleapis-common-protos into ``dest``."""
    installed = Path(google.api.annotations_pb2.__file__).resolve().parent.parent.parent
    for name in GOOGLEAPIS_PROTOS:
        target = dest / name
        source = (installed / name).read_bytes()
        if not target.exists() or target.read_bytes() != source:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source)
    return dest


def _include_dirs() -> list[str]:
    """The include path: our protos, the staged google/api protos and protobuf's well-known types."""
    return [str(PROTO_ROOT), str(stage_googleapis()), str(resources.files("grpc_tools") / "_proto")]


def generate(out_dir: Path) -> None:
    """Write a fresh generation of the stubs into ``out_dir/regserve/v1``, ``out_dir/inference`` and
    ``out_dir/grpc/reflection/v1``."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    oip_protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / OIP_PACKAGE).glob("*.proto"))
    reflection_protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / REFLECTION_PACKAGE).glob("*.proto")
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
        args += [f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        (Path(tmp) / PACKAGE).mkdir(parents=True)
        descriptors = [f"--descriptor_set_out={Path(tmp) / PACKAGE / DESCRIPTOR_SET}", "--include_source_info"]
        commands = ([*args, *descriptors, *protos], [*args, *oip_protos], [*args, *reflection_protos])
        if any(protoc.main(command) != 0 for command in commands):
            raise SystemExit("protoc failed")
        for package, rewrite in ((OIP_PACKAGE, OIP_IMPORT), (REFLECTION_PACKAGE, REFLECTION_IMPORT)):
            for stub in (Path(tmp) / package).glob("*_pb2_grpc.py"):
                stub.write_text(stub.read_text().replace(*rewrite))
        for package in PACKAGES:
            target = out_dir / package
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(Path(tmp) / package, target)
            (target / "__init__.py").write_text(INIT_TEXT.format(package.as_posix()))
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
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare instead of writing")
    mode.add_argument(
        "--stage-googleapis", action="store_true", help=f"only stage the google/api protos in {GOOGLEAPIS_DIR}"
    )
    args = parser.parse_args()
    if args.stage_googleapis:
        stage_googleapis()
        return 0
    out_dir = Path(args.out_dir)
    if not args.check:
        generate(out_dir)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        diffs = [
            f"{package.as_posix()}/{name}"
            for package in PACKAGES
            for name in differences(out_dir / package, Path(tmp) / package)
        ]
    if diffs:
        print("stale generated stubs (run `make generate`):", ", ".join(diffs), file=sys.stderr)
        return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
