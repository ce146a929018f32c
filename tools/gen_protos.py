#!/usr/bin/env python3
"""Regenerate the committed Python code for ``proto/`` with the pinned grpcio-tools.

Proto paths mirror Python paths (``proto/edged/v1/models.proto`` -> ``edged/v1/models_pb2.py``),
so the generated imports (``from edged.v1 import errors_pb2``) need no rewriting. The generated
files are committed; ``tests/test_codegen.py`` regenerates into a temp dir and fails on any
difference, so they cannot go stale.

Usage: python tools/gen_protos.py [--out DIR]      (default: the repository root)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PINNED_GRPCIO_TOOLS = "1.81.1"
ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGES = ("edged/v1", "edged/oip")
# The OIP messages keep Triton's package and names (``inference.ModelInferRequest``), which
# tritonclient registers in protobuf's default pool too: two files defining one symbol there is
# a "duplicate symbol" TypeError in whichever module a process imports second. edged's OIP
# module therefore registers in a pool of its own; the wire format is the same bytes.
PRIVATE_POOL = ("edged/oip/",)
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = ("# edged's own pool: tritonclient defines these 'inference' symbols in the default\n"
             "POOL = _descriptor_pool.DescriptorPool()\n"
             "DESCRIPTOR = POOL.AddSerializedFile(")


def proto_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (PROTO_ROOT / pkg).glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) for every proto; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    version = getattr(grpc_tools, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("grpcio-tools")
    if version != PINNED_GRPCIO_TOOLS:
        raise SystemExit(f"gen_protos: grpcio-tools {version} != pinned {PINNED_GRPCIO_TOOLS}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    written: list[Path] = []
    for pkg in PACKAGES:
        (out / pkg).mkdir(parents=True, exist_ok=True)
        init = out / pkg / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf code: do not edit (tools/gen_protos.py)."""\n')
        written.append(init)
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("gen_protos: protoc failed")
    for rel in files:
        stem = rel[: -len(".proto")]
        if rel.startswith(PRIVATE_POOL):
            _use_own_pool(out / (stem + "_pb2.py"))
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            written.append(out / (stem + suffix))
    return written


def _use_own_pool(module: Path) -> None:
    text = module.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise SystemExit(f"gen_protos: {module}: expected one default-pool registration")
    module.write_text(text.replace(_DEFAULT_POOL, _OWN_POOL))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
