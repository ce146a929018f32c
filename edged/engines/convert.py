"""Make a smaller variant of an ONNX model on the device: INT8 or FP16, checked against the
original on the model's own warm-up inputs.

Groundwork of the variants issue (17): the store, the planner's variant choice and
`edgectl recommend` build on it. A conversion never runs in the daemon: ``run_job`` starts
``python -m edged.engines.convert`` as a child process with a memory budget of its own (its
RSS is watched and the child is killed past the budget: an address-space limit would trip
on the thread stacks and arenas ONNX Runtime reserves but never touches), reads its progress
as JSON lines, and a crash or a kill of the child leaves no variant file (nothing is
installed until the caller accepts the reported accuracy change).

The converters are the maintained ones, imported lazily because they pull in ``onnx`` (an
optional extra, ``edged[convert]``): INT8 is ONNX Runtime's own dynamic quantization (weights
to int8, activations quantized at run time), after ONNX Runtime's pre-processing (constant
folding turns weights fed through ``Identity``/``Constant`` nodes into initializers, which
the quantizer needs); FP16 is onnxconverter-common's ``convert_float_to_float16`` with the
model's inputs and outputs kept in float32, so a client sends the same tensors to every
variant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged import errors as e

KINDS = ("int8", "fp16")


@dataclass(frozen=True)
class OutputDiff:
    """How far a variant's outputs are from the original's on the same inputs."""

    output: str
    max_abs: float
    mean_abs: float
    max_rel: float  # max |a - b| / (max |a| + eps): comparable across outputs
    argmax_agreement: float | None  # over the last axis, for outputs with one (classifiers)


@dataclass(frozen=True)
class VariantReport:
    kind: str
    path: str
    size_bytes: int
    source_bytes: int
    seconds: float
    diffs: tuple[OutputDiff, ...]

    @property
    def worst_rel(self) -> float:
        return max((d.max_rel for d in self.diffs), default=0.0)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "worst_rel": self.worst_rel}


def convert(kind: str, src: Path, dst: Path) -> None:
    """Write the ``kind`` variant of ``src`` to ``dst`` (raises ``InvalidArgument`` for a
    model the converter cannot handle)."""
    if kind not in KINDS:
        raise e.InvalidArgument(f"unknown variant kind {kind!r} ({', '.join(KINDS)})",
                                field="kind")
    try:
        if kind == "int8":
            _int8(src, dst)
        else:
            _fp16(src, dst)
    except ImportError as exc:
        raise e.FailedPrecondition(f"making a {kind} variant needs {exc.name}: install "
                                   "edged[convert]") from None
    except (ValueError, RuntimeError, KeyError) as exc:
        raise e.InvalidArgument(f"cannot make a {kind} variant of this model: {exc}",
                                field="kind") from None


def _int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        # symbolic shape inference needs sympy and gains nothing for dynamic quantization
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)


def _fp16(src: Path, dst: Path) -> None:
    import warnings

    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    with warnings.catch_warnings():  # one warning per clipped tiny weight: thousands of lines
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))


def sample_inputs(path: Path, shapes: Mapping[str, Sequence[int]],
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at the declared warm-up shapes (a dynamic dimension without one is 1), drawn
    from a fixed seed so that every variant sees the same ones."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    for i in sess.get_inputs():
        shape = tuple(shapes.get(i.name) or [d if isinstance(d, int) and d > 0 else 1
                                             for d in i.shape])
        dtype = _ORT_DTYPES.get(i.type)
        if dtype is None:
            raise e.InvalidArgument(f"input '{i.name}' has type {i.type}: no sample for it",
                                    field="warmup")
        out[i.name] = (rng.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                       else rng.integers(0, 2, shape).astype(dtype))
    return out


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
               "tensor(double)": np.float64, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
               "tensor(bool)": np.bool_}


def compare(src: Path, variant: Path, inputs: Mapping[str, np.ndarray]) -> list[OutputDiff]:
    import onnxruntime as ort

    def run(p: Path) -> dict[str, np.ndarray]:
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, dict(inputs)), strict=True))

    ref, got = run(src), run(variant)
    diffs = []
    for name, a in ref.items():
        b = np.asarray(got[name], dtype=np.float64)
        a64 = np.asarray(a, dtype=np.float64)
        d = np.abs(a64 - b)
        agree = float(np.mean(a64.argmax(-1) == b.argmax(-1))) \
            if a64.ndim >= 1 and a64.shape[-1] > 1 else None
        diffs.append(OutputDiff(name, float(d.max(initial=0.0)), float(d.mean()) if d.size
                                else 0.0, float(d.max(initial=0.0) /
                                                (np.abs(a64).max(initial=0.0) + 1e-12)), agree))
    return diffs


def make_variant(kind: str, src: Path, dst: Path,
                 shapes: Mapping[str, Sequence[int]] | None = None,
                 progress: Callable[[str], None] = lambda step: None) -> VariantReport:
    """Convert, then compare on warm-up inputs: what the operator accepts or refuses."""
    started = time.monotonic()
    progress("converting")
    convert(kind, src, dst)
    progress("comparing")
    diffs = compare(src, dst, sample_inputs(src, shapes or {}))
    return VariantReport(kind, str(dst), dst.stat().st_size, src.stat().st_size,
                         round(time.monotonic() - started, 3), tuple(diffs))


# -- the job: a child process with a memory budget of its own --------------------------------
def run_job(kind: str, src: Path, dst: Path, *, shapes: Mapping[str, Sequence[int]] | None = None,
            memory_limit_bytes: int | None = None, timeout_s: float = 3600,
            on_progress: Callable[[str], None] = lambda step: None) -> VariantReport:
    """``make_variant`` in a child process whose RSS may not pass ``memory_limit_bytes``: a
    converter that runs out of its budget, crashes or hangs ends the child, never the caller,
    and raises ``ResourceExhausted``/``Internal``/``DeadlineExceeded``; ``dst`` exists only
    when the job succeeded."""
    cmd = [sys.executable, "-m", "edged.engines.convert", kind, str(src), str(dst),
           "--shapes", json.dumps({k: list(v) for k, v in (shapes or {}).items()}),
           "--parent", str(os.getpid())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    watch = _Watch(proc, memory_limit_bytes, time.monotonic() + timeout_s)
    report: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            if "progress" in msg:
                on_progress(str(msg["progress"]))
            report, error = msg.get("report", report), msg.get("error", error)
        proc.wait()
    finally:
        watch.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr is not None else ""
    if report is not None and proc.returncode == 0:
        return VariantReport(**{**report, "diffs": tuple(OutputDiff(**d)
                                                         for d in report["diffs"])})
    dst.unlink(missing_ok=True)
    if watch.over_budget:
        raise e.ResourceExhausted(f"making the {kind} variant needed more than its memory "
                                  f"budget ({memory_limit_bytes} bytes): the job was ended")
    if watch.timed_out:
        raise e.DeadlineExceeded(f"making the {kind} variant took more than {timeout_s:g}s")
    if error is not None:
        raise e.BY_CODE.get(e.Code(error["code"]), e.Internal)(error["message"])
    tail = stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    raise e.Internal(f"making the {kind} variant failed: {tail[0]}")


class _Watch:
    """Ends the job's child past its memory budget or its deadline (polled: a conversion
    takes seconds, a 20 ms look is enough)."""

    def __init__(self, proc: subprocess.Popen[str], limit: int | None, deadline: float) -> None:
        import threading

        self.over_budget = self.timed_out = False
        self._proc, self._limit, self._deadline = proc, limit, deadline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="convert-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            child = psutil.Process(self._proc.pid)
            while not self._done.wait(0.02):
                if self._limit and child.memory_info().rss > self._limit:
                    self.over_budget = True
                elif time.monotonic() > self._deadline:
                    self.timed_out = True
                else:
                    continue
                self._proc.kill()
                return
        except psutil.Error:  # it ended by itself
            return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _end_with(parent: int) -> None:
    """A job whose daemon died (SIGKILL) ends too: nobody would install its result, and the
    next start removes the store's temporary files it writes into."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edged.engines.convert",
                                description="make one variant (run by edged, not by hand)")
    p.add_argument("kind", choices=KINDS, help="the variant to make")
    p.add_argument("src", type=Path, help="the original ONNX model")
    p.add_argument("dst", type=Path, help="where the variant goes")
    p.add_argument("--shapes", default="{}", help="warm-up shapes as JSON {input: [dims]}")
    p.add_argument("--parent", type=int, default=0, help="end when this process ends")
    args = p.parse_args(argv)
    if args.parent:
        _end_with(args.parent)

    def say(msg: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    try:
        report = make_variant(args.kind, args.src, args.dst, json.loads(args.shapes),
                              lambda step: say({"progress": step}))
    except e.EdgedError as exc:
        say({"error": {"code": exc.code.value, "message": str(exc)}})
        return 1
    say({"report": asdict(report)})
    return 0


if __name__ == "__main__":
    sys.exit(_main())
