"""The gRPC path, before and after a change, in one run: two daemons side by side.

    git archive <before-commit> | tar -x -C /tmp/before && ln -s $PWD/models /tmp/before/models
    .venv/bin/python -m bench.grpc_before_after /tmp/before [--quick]

One daemon runs from the ``before`` tree, one from this one (each with per_model_concurrency 2,
preloader off); one plain and one shared-memory client (``lanes=False``) each; the four paths
run in alternating blocks (``time_alternating``) so a slow spell of the shared box hits all.
Prints a markdown table of p50/p99 per model and path, and after/before of the p50.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import REPO, ms, percentiles, time_alternating
from bench.latency import demo_inputs

MODELS = ("silero-vad", "ppocr-cls", "ppocr-rec", "ppocr-det")


def run(before: Path, quick: bool) -> list[str]:
    import daemon_harness
    from daemon_harness import DaemonProcess

    ds: dict[str, DaemonProcess] = {}
    cfg = {"preload": {"enabled": False}, "engines": {"per_model_concurrency": 2}}
    try:
        for tag, root in (("before", before), ("after", REPO)):
            daemon_harness.REPO = root  # the daemon's working directory: its edged package
            ds[tag] = DaemonProcess(cfg).start()
    finally:
        daemon_harness.REPO = REPO
    rows = ["| model, path | before p50 / p99 | after p50 / p99 | after/before p50 |",
            "| --- | --- | --- | --- |"]
    try:
        cl = {}
        for tag, d in ds.items():
            cl[tag, "plain"] = d.client(lanes=False, shm_threshold=None)
            cl[tag, "shm"] = d.client(lanes=False, shm_threshold=0)
            for m in MODELS:
                cl[tag, "plain"].install(m, REPO / "models" / f"{m}.onnx",
                                         warmup_shapes=demo_inputs()[m][1])
                cl[tag, "plain"].load(m)
        for m in MODELS:
            f = demo_inputs()[m][0]
            big = m in ("ppocr-rec", "ppocr-det")
            n = (20 if quick else 60) if big else (300 if quick else 1500)
            fns = {f"{t}/{p}": (lambda c=cl[t, p], m=m, f=f: c.infer(m, f))
                   for t in ds for p in ("plain", "shm")}
            got = time_alternating(fns, n, block=5 if big else 50)
            for p in ("plain", "shm"):
                b, a = percentiles(got[f"before/{p}"]), percentiles(got[f"after/{p}"])
                rows.append(f"| {m}, gRPC {p} | {ms(b[0])} / {ms(b[1])} | {ms(a[0])} / "
                            f"{ms(a[1])} | {a[0] / b[0]:.3f} |")
        for c in cl.values():
            c.close()
    finally:
        for d in ds.values():
            d.stop()
            d.cleanup()
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests"))
    print("\n".join(run(Path(sys.argv[1]), "--quick" in sys.argv)))
