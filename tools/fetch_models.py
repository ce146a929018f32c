#!/usr/bin/env python3
"""Fetch the demo models: real ONNX files shipped inside PyPI packages.

No model hub is reachable on the device or in CI, but PyPI is: silero-vad and
rapidocr-onnxruntime ship their ONNX files inside their wheels. We download the pinned wheels
with ``pip download --no-deps``, check the wheel's sha256, extract only the model files, and
check each model's sha256 — a mismatch anywhere stops with exit code 2 and leaves nothing behind.

Usage: python tools/fetch_models.py [--dest models] [--force] [--find-links DIR]
(``--find-links``: take the wheels from a local directory instead of PyPI, e.g. a mirror.)
Writes DEST/<name>.onnx for every model in MODELS and DEST/models.json (name -> file, sha256,
tasks, source), which the README's walk-through and the tests use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class DemoModel:
    name: str
    wheel: Wheel
    member: str
    sha256: str
    tasks: tuple[str, ...]
    quality: float


SILERO = Wheel(
    "silero-vad==6.2.3",
    "silero_vad-6.2.3-py3-none-any.whl",
    "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
)
RAPIDOCR = Wheel(
    "rapidocr-onnxruntime==1.4.4",
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
    "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
)

MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        "silero-vad",
        SILERO,
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
        ("vad",),
        0.9,
    ),
    DemoModel(
        "ppocr-det",
        RAPIDOCR,
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        ("ocr.detect",),
        0.8,
    ),
    DemoModel(
        "ppocr-rec",
        RAPIDOCR,
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        ("ocr.recognize",),
        0.8,
    ),
    DemoModel(
        "ppocr-cls",
        RAPIDOCR,
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        ("ocr.classify",),
        0.7,
    ),
)


class FetchError(Exception):
    """A download failed or a checksum did not match."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(wheel: Wheel, into: Path, find_links: Path | None = None) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(into), wheel.requirement]
    if find_links is not None:
        cmd[4:4] = ["--no-index", "--find-links", str(find_links)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    path = into / wheel.filename
    if proc.returncode != 0 or not path.exists():
        raise FetchError(f"pip download {wheel.requirement} failed: {proc.stderr.strip()[-500:]}")
    actual = sha256_of(path)
    if actual != wheel.sha256:
        raise FetchError(f"{wheel.filename}: sha256 {actual} != pinned {wheel.sha256}")
    return path


def extract(model: DemoModel, wheel_path: Path, dest: Path) -> Path:
    """Write the model from the wheel to ``dest`` if its sha256 matches; nothing otherwise."""
    target = dest / f"{model.name}.onnx"
    tmp = dest / f".{model.name}.onnx.tmp"
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            try:
                data = zf.read(model.member)
            except KeyError:
                raise FetchError(f"{wheel_path.name} has no member {model.member} (was the "
                                 f"model moved in {model.wheel.requirement}?)") from None
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        actual = sha256_of(tmp)
        if actual != model.sha256:
            raise FetchError(f"{model.member}: sha256 {actual} != pinned {model.sha256}")
        os.replace(tmp, target)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel_path.name} is not a valid wheel: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def fetch(dest: Path, force: bool = False, models: tuple[DemoModel, ...] = MODELS,
          find_links: Path | None = None) -> dict[str, dict[str, object]]:
    """Fetch ``models`` into ``dest``. A FetchError leaves no partial or unverified file in
    ``dest`` (models verified before it stay) and no new ``models.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    index: dict[str, dict[str, object]] = {}
    todo = [m for m in models if force or not _present(dest, m)]
    with tempfile.TemporaryDirectory() as tmp:
        wheels: dict[str, Path] = {}
        for model in todo:  # every wheel is downloaded and checked before any model is written
            if model.wheel.filename not in wheels:
                print(f"downloading {model.wheel.requirement} ...", file=sys.stderr)
                wheels[model.wheel.filename] = download_wheel(model.wheel, Path(tmp),
                                                              find_links)
        for model in todo:
            extract(model, wheels[model.wheel.filename], dest)
    for model in models:
        path = dest / f"{model.name}.onnx"
        index[model.name] = {
            "file": path.name,
            "sha256": model.sha256,
            "size_bytes": path.stat().st_size,
            "tasks": list(model.tasks),
            "quality": model.quality,
            "source": f"{model.wheel.requirement}:{model.member}",
        }
    (dest / "models.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def _present(dest: Path, model: DemoModel) -> bool:
    path = dest / f"{model.name}.onnx"
    return path.exists() and sha256_of(path) == model.sha256


def main(argv: list[str] | None = None, models: tuple[DemoModel, ...] = MODELS) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=Path("models"), help="output directory")
    parser.add_argument("--force", action="store_true", help="download even if present")
    parser.add_argument("--find-links", type=Path, help="take the wheels from this directory")
    args = parser.parse_args(argv)
    try:
        index = fetch(args.dest, args.force, models, find_links=args.find_links)
    except FetchError as exc:
        print(f"fetch_models: {exc}", file=sys.stderr)
        return 2
    for name, info in index.items():
        print(f"{name:12s} {info['size_bytes']:>10d} B  sha256 {str(info['sha256'])[:12]}  "
              f"{args.dest / str(info['file'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
