"""The reference every inference test compares with: in-process ONNX Runtime with the same
session options as edged's engine workers (one intra-op and one inter-op thread, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
