#!/usr/bin/env python3
"""Record a real trace with the daemon's own trace file, for the replay benchmark.

    .venv/bin/python bench/record_trace.py [--seconds 240] [--out bench/traces/recorded]

Starts the real daemon (``tests/daemon_harness.py``: its own state dir and socket) with
``trace.path`` set — the daemon then appends every inference request it serves to that JSONL
file (``edged.manager.memory.traces.TraceRecorder``) — installs eight ONNX models of 2-48 MB
(``tests/modelgen.py``, real float32 weights that ONNX Runtime allocates), and drives a small
robot day through the real gRPC API: a VAD every 0.5 s, patrols (detect every ~1 s, depth every
~2 s), conversations (wake -> asr -> llm -> tts), reading bursts and one-off calibrations, with
a mission that changes every 60 s. The daemon's swap budget is set below the models' total, so
it evicts and preloads as it would on a device. Writes ``<out>.jsonl`` (the daemon's trace
file, as it wrote it) and ``<out>.models.json`` (each model's measured bytes and measured load
seconds, from ``ListModels``): the two files ``tools/replay.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

MB = 1 << 20
MODELS = {"vad": 2, "wake": 3, "asr": 24, "llm": 48, "tts": 16, "detect": 12, "depth": 20,
          "ocr": 4, "calib": 8}
MISSIONS = ("patrol", "conversation", "reading", "patrol", "idle", "conversation")


def drive(client: object, seconds: float, rng: random.Random) -> int:
    """The robot's requests for ``seconds`` of wall time; returns how many were sent."""
    x = np.ones((1, 64), np.float32)
    sent = 0
    start = time.monotonic()
    due: dict[str, float] = {"vad": 0.0}

    def infer(name: str) -> None:
        nonlocal sent
        client.infer(name, {"x": x})  # type: ignore[attr-defined]
        sent += 1

    while (now := time.monotonic() - start) < seconds:
        mission = MISSIONS[int(now // 60) % len(MISSIONS)]
        if now >= due["vad"]:
            infer("vad")
            due["vad"] = now + 0.5
        if mission == "patrol":
            infer("detect")
            if rng.random() < 0.5:
                infer("depth")
        elif mission == "conversation" and rng.random() < 0.3:
            for name in ("wake", "asr", "llm", "tts"):
                infer(name)
                time.sleep(rng.uniform(0.2, 0.8))
        elif mission == "reading":
            for _ in range(rng.randint(1, 4)):
                infer("ocr")
        if rng.random() < 0.01:
            infer("calib")
        time.sleep(rng.uniform(0.8, 1.2))
    return sent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "traces" / "recorded")
    p.add_argument("--budget", default="80MiB", help="the daemon's swap budget")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    import modelgen
    from daemon_harness import DaemonProcess

    work = Path(tempfile.mkdtemp(prefix="edged-rec-"))
    trace = work / "live.jsonl"
    d = DaemonProcess({"budgets": {"swap": args.budget},
                       "preload": {"enabled": True, "interval_s": 0.5},
                       "trace": {"path": str(trace), "max_bytes": "64MiB"}})
    try:
        d.start()
        with d.client() as c:
            for i, (name, mb) in enumerate(MODELS.items()):
                c.install(name, modelgen.weights_model(work / f"{name}.onnx", mb * MB, seed=i))
            sent = drive(c, args.seconds, random.Random(args.seed))
            models = {m.name: {"size_bytes": m.versions[0].measured_bytes
                               or m.versions[0].estimated_bytes,
                               "load_s": round(max(m.versions[0].load_seconds, 0.01), 4)}
                      for m in c.list_models()}
        d.stop()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trace, args.out.with_suffix(".jsonl"))
        args.out.with_suffix(".models.json").write_text(json.dumps(models, indent=1) + "\n")
        print(f"{sent} requests sent, {len(trace.read_text().splitlines())} recorded; models: "
              f"{models}", file=sys.stderr)
    finally:
        d.stop(expect_clean=False)
        d.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
