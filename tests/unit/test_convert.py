"""Variants made on the device (groundwork of issue 17): real converters on real models, in a
child process with a memory budget; the report says how far the outputs moved."""

from __future__ import annotations

from pathlib import Path

import modelgen
import pytest

from edged import errors as e
from edged.engines import convert


@pytest.mark.parametrize("kind", convert.KINDS)
def test_a_variant_of_a_demo_model_is_smaller_and_close(demo_models, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                        kind: str) -> None:
    src = demo_models["ppocr-cls"]
    steps: list[str] = []
    report = convert.run_job(kind, src, tmp_path / f"cls-{kind}.onnx",
                             shapes={"x": [1, 3, 48, 192]}, on_progress=steps.append)
    assert steps == ["converting", "comparing"]
    assert Path(report.path).is_file() and report.size_bytes == Path(report.path).stat().st_size
    assert report.size_bytes < 0.8 * report.source_bytes, report
    assert len(report.diffs) == 1 and report.diffs[0].argmax_agreement is not None
    assert 0 < report.worst_rel < 0.2, report  # moved, but not far


def test_the_comparison_sees_a_broken_variant(tmp_path: Path) -> None:
    a = modelgen.add_model(tmp_path / "a.onnx", offset=1.0)
    b = modelgen.add_model(tmp_path / "b.onnx", offset=3.0)
    diffs = convert.compare(a, b, convert.sample_inputs(a, {"x": [2, 4]}))
    assert diffs[0].max_abs == pytest.approx(2.0)


def test_a_job_past_its_memory_budget_fails_cleanly(demo_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dst = tmp_path / "rec-int8.onnx"
    with pytest.raises(e.ResourceExhausted, match="more than its memory budget"):
        convert.run_job("int8", demo_models["ppocr-rec"], dst, memory_limit_bytes=64 << 20)
    assert not dst.exists()


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "junk.onnx"
    src.write_bytes(b"not a model")
    dst = tmp_path / "out.onnx"
    with pytest.raises(e.EdgedError):
        convert.run_job("fp16", src, dst)
    assert not dst.exists()
