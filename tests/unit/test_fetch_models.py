"""tools/fetch_models.py against a local wheel, with real `pip download` (--find-links, no
network): a pinned wheel sum that does not match, a missing member, a model sum that does not
match — each a clear error that leaves nothing behind; and the good path."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fetch_models.py"
MEMBER = "fakemodels/data/tiny.onnx"
PAYLOAD = b"not really onnx, but bytes with a known sha256"


@pytest.fixture(scope="module")
def fm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_models", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_models"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    """A minimal but valid wheel of a package 'fakemodels' 1.0 holding one model file."""
    d = tmp_path / "wheels"
    d.mkdir()
    with zipfile.ZipFile(d / "fakemodels-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr(MEMBER, PAYLOAD)
        zf.writestr("fakemodels-1.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: fakemodels\nVersion: 1.0\n")
        zf.writestr("fakemodels-1.0.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        zf.writestr("fakemodels-1.0.dist-info/RECORD", "")
    return d


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _model(fm: ModuleType, wheel_dir: Path, *, wheel_sha: str | None = None,
           member: str = MEMBER, model_sha: str | None = None) -> object:
    path = wheel_dir / "fakemodels-1.0-py3-none-any.whl"
    wheel = fm.Wheel("fakemodels==1.0", path.name, wheel_sha or _sha(path.read_bytes()))
    return fm.DemoModel("tiny", wheel, member, model_sha or _sha(PAYLOAD), ("test",), 0.5)


def _left_behind(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_good_wheel_is_fetched_and_indexed(fm: ModuleType, wheel_dir: Path,
                                           tmp_path: Path) -> None:
    dest = tmp_path / "models"
    index = fm.fetch(dest, models=(_model(fm, wheel_dir),), find_links=wheel_dir)
    assert (dest / "tiny.onnx").read_bytes() == PAYLOAD
    assert index["tiny"]["sha256"] == _sha(PAYLOAD)
    assert _left_behind(dest) == ["models.json", "tiny.onnx"]


def test_wheel_checksum_mismatch_is_refused(fm: ModuleType, wheel_dir: Path,
                                            tmp_path: Path) -> None:
    dest = tmp_path / "models"
    model = _model(fm, wheel_dir, wheel_sha="0" * 64)
    with pytest.raises(fm.FetchError, match=r"fakemodels-1.0-py3-none-any.whl: sha256 \w+ "
                                            r"!= pinned 0{64}"):
        fm.fetch(dest, models=(model,), find_links=wheel_dir)
    assert _left_behind(dest) == []


def test_missing_member_is_a_clear_error_and_leaves_no_tmp(fm: ModuleType, wheel_dir: Path,
                                                          tmp_path: Path) -> None:
    dest = tmp_path / "models"
    model = _model(fm, wheel_dir, member="fakemodels/data/gone.onnx")
    with pytest.raises(fm.FetchError, match="has no member fakemodels/data/gone.onnx"):
        fm.fetch(dest, models=(model,), find_links=wheel_dir)
    assert _left_behind(dest) == []


def test_model_checksum_mismatch_leaves_no_tmp(fm: ModuleType, wheel_dir: Path,
                                               tmp_path: Path) -> None:
    dest = tmp_path / "models"
    with pytest.raises(fm.FetchError, match="tiny.onnx: sha256"):
        fm.fetch(dest, models=(_model(fm, wheel_dir, model_sha="f" * 64),),
                 find_links=wheel_dir)
    assert _left_behind(dest) == []


def test_main_exits_2_with_one_line(fm: ModuleType, wheel_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = fm.main(["--dest", str(tmp_path / "m"), "--find-links", str(wheel_dir)],
                   models=(_model(fm, wheel_dir, wheel_sha="0" * 64),))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("fetch_models: fakemodels-1.0-py3-none-any.whl: sha256")
    assert not any("Traceback" in line for line in err)
