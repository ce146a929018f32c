"""What binding a lane's session to the lane's memory (ONNX Runtime IO binding) saves.

    .venv/bin/python bench/lane_bind.py [--n 2000] [--threads 8] [--out FILE]

A child process plays the engine worker: each demo model loaded once (default engine options:
on a GPU machine, the CUDA EP where onnxruntime has it), served by two ``LaneHost``s, one that
binds (``bind="always"``: from the second like request on, ORT reads the inputs from the lane
and writes the outputs into it) and one that never does (ORT builds the outputs, lane.py copies
them into the lane). This process is the client, zero-copy (``Lane.inputs``/``run``), one lane
to each, in alternating blocks so that the shared box's slow spells hit both alike; then
``--threads`` client threads, each with its own lane, for a fixed time on each in turn.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import percentiles, time_alternating  # noqa: E402
from bench.lane import _throughput  # noqa: E402
from bench.latency import demo_inputs  # noqa: E402
from edged.client.lane import Lane  # noqa: E402

MODELS = ("silero-vad", "ppocr-cls", "ppocr-rec", "ppocr-det")
LANES_PER_KEY = 9  # one for the latency blocks, one per throughput thread (8)

_CHILD = r"""
import sys
from pathlib import Path
from edged.engines.base import EngineOptions, get_backend
from edged.engines.lane import LaneHost

models, pid, d, n = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
sessions = {}
for name in sys.argv[5:]:
    s = get_backend("onnx").open(models / f"{name}.onnx", EngineOptions())
    sessions[f"{name}:1"] = sessions[f"{name}:2"] = s
    print(name, ",".join(s.providers), file=sys.stderr, flush=True)
# version 1's lanes on a host that binds, version 2's on one that never does: the same session
hosts = {1: LaneHost(sessions.get, bind="always"), 2: LaneHost(sessions.get, bind="never")}
i = 0
for key in sessions:
    for k in range(n):
        i += 1
        hosts[int(key.split(":")[1])].open(i, key, pid, str(d / f"{i}.lane"), 64 << 20, 0o600,
                                           -1)
print("ready", flush=True)
sys.stdin.read()
"""


def _lanes(d: Path, models: list[str]) -> dict[str, list[Lane]]:
    out: dict[str, list[Lane]] = {}
    i = 0
    for name in models:
        for version in (1, 2):
            for _ in range(LANES_PER_KEY):
                i += 1
                out.setdefault(f"{name}:{version}", []).append(Lane(name, version,
                                                                     str(d / f"{i}.lane")))
    return out


def _caller(lane: Lane, feeds: dict[str, np.ndarray]) -> Any:
    views = lane.inputs({k: (v.shape, v.dtype) for k, v in feeds.items()})

    def call() -> Any:
        for k, v in feeds.items():
            views[k][...] = v
        return lane.run(timeout=60)

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="calls per variant (small models)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput run")
    ap.add_argument("--out")
    args = ap.parse_args()
    models = [m for m in MODELS if (REPO / "models" / f"{m}.onnx").exists()]
    inputs = demo_inputs()
    rows = ["| model | unbound p50 / p99 | bound p50 / p99 | bound - unbound p50 | "
            f"{args.threads} threads: unbound / bound calls/s |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(REPO / "models"), str(os.getpid()), tmp,
             str(LANES_PER_KEY), *models], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            lanes = _lanes(Path(tmp), models)
            for name in models:
                feeds = inputs[name][0]
                n = args.n if name in ("silero-vad", "ppocr-cls") else max(20, args.n // 40)
                fns = {v: _caller(lanes[f"{name}:{v}"][0], feeds) for v in (2, 1)}
                times = time_alternating(fns, n, block=50 if n > 100 else 5)
                (u50, u99), (b50, b99) = percentiles(times[2]), percentiles(times[1])
                tput: dict[int, float] = {}
                for v in (2, 1, 2, 1):  # (twice each, interleaved: the best of two)
                    calls = [_caller(ln, feeds) for ln in lanes[f"{name}:{v}"][1:][:args.threads]]
                    tput[v] = max(tput.get(v, 0.0), _throughput(calls, args.seconds)[0])
                rows.append(f"| {name} | {u50 * 1e3:.3f} / {u99 * 1e3:.3f} ms | "
                            f"{b50 * 1e3:.3f} / {b99 * 1e3:.3f} ms | "
                            f"{(b50 - u50) * 1e6:+.0f} us | {tput[2]:.0f} / {tput[1]:.0f} "
                            f"({tput[1] / tput[2]:.2f}x) |")
                print(rows[-1], flush=True)
            for group in lanes.values():
                for ln in group:
                    ln.close()
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(30)
    text = "\n".join(rows) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
