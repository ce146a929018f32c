"""Variants made on the device (edged.engines.convert): footprint, latency and output change of
INT8 and FP16 against FP32, per demo model, on this machine's CPU.

    python -m bench --only variants --out bench/variants_results.md

Each variant is loaded in a fresh process (its RSS growth from creating the session and one
warm-up run is the footprint, as edged's workers measure it), then timed; the output change is
the converter's own report on the warm-up inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, Section

MODELS = {"ppocr-cls": {"x": [1, 3, 48, 192]}, "ppocr-rec": {"x": [1, 3, 48, 320]},
          "ppocr-det": {"x": [1, 3, 640, 640]}}

_PROBE = r"""
import json, sys, time
import numpy as np, psutil
proc = psutil.Process()
import onnxruntime as ort
path, shapes, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
# the demo models take one float32 input each; no session is made before the one measured
rng = np.random.default_rng(0)
feeds = {k: rng.random(tuple(v)).astype(np.float32) for k, v in shapes.items()}
imported = proc.memory_info().rss
sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
sess.run(None, feeds)
loaded = proc.memory_info().rss
times = []
for _ in range(n):
    t = time.perf_counter(); sess.run(None, feeds); times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({"footprint": loaded - imported, "p50": times[len(times) // 2]}))
"""


def _probe(path: Path, shapes: dict[str, list[int]], n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path), json.dumps(shapes), str(n)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(quick: bool) -> Section:
    from edged.engines import convert

    sec = Section("Variants made on the device (INT8, FP16 vs FP32)", method=__doc__.split(
        "\n\n")[0])
    n = 5 if quick else 20
    rows = ["| model | variant | file | footprint | p50 latency | max output change (rel) | "
            "argmax agreement | made in |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, shapes in MODELS.items():
            src = REPO / "models" / f"{name}.onnx"
            base = _probe(src, shapes, n)
            rows.append(f"| {name} | fp32 | {src.stat().st_size / 2**20:.1f} MiB | "
                        f"{base['footprint'] / 2**20:.1f} MiB | {base['p50'] * 1e3:.2f} ms | - | - "
                        "| - |")
            for kind in convert.KINDS:
                dst = Path(tmp) / f"{name}-{kind}.onnx"
                rep = convert.run_job(kind, src, dst, shapes=shapes)
                got = _probe(dst, shapes, n)
                agree = min((d.argmax_agreement for d in rep.diffs
                             if d.argmax_agreement is not None), default=None)
                rows.append(
                    f"| {name} | {kind} | {rep.size_bytes / 2**20:.1f} MiB | "
                    f"{got['footprint'] / 2**20:.1f} MiB "
                    f"({got['footprint'] / max(base['footprint'], 1):.2f}x) | "
                    f"{got['p50'] * 1e3:.2f} ms ({got['p50'] / base['p50']:.2f}x) | "
                    f"{rep.worst_rel:.4f} | {'-' if agree is None else f'{agree:.3f}'} | "
                    f"{rep.seconds:.1f} s |")
    sec.tables.append("\n".join(rows))
    return sec
