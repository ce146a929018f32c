"""The load walk: the parts a demand load passes through, from the manager facade (what the
servicers call: ``ModelsServicer.Load`` -> ``manager.load``, ``InferenceServicer.ModelInfer``
-> ``manager.infer``) down to the worker pool's ``load``.

Builds the daemon's own parts (``edged.daemon.build_parts``) on a temp dir, installs two small
ONNX models in the swap tier, then traces (``sys.settrace``, this thread only) a ``load`` of
one and an ``infer`` of the other while cold. Only calls into the parts listed in ``PARTS``
are kept (leaf helpers such as the manifests, the store and the telemetry readers are the same
whatever the shape of the middle); a *stop* is an entry into a part from another part, and the
function calls into ``manager.py`` and ``serving.py`` are listed as well.

    .venv/bin/python tools/load_walk.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import modelgen  # noqa: E402

from edged import config as cfgmod  # noqa: E402
from edged.daemon import build_parts  # noqa: E402
from edged.manager.events import EventBus  # noqa: E402
from edged.telemetry.sampler import Sampler  # noqa: E402
from edged.views import InstallSpec  # noqa: E402

ROOT = str(REPO / "edged")
PARTS = ("daemon.py", "manager/manager.py", "manager/serving.py", "manager/specs.py",
         "manager/transitions.py", "manager/memory/residency.py", "manager/memory/preloader.py",
         "manager/memory/policy.py", "manager/memory/planner.py", "engines/workers.py")
END = "engines/workers.py"  # the pool: the walk's end
FACADE = ("manager/manager.py", "manager/serving.py")


def trace(fn: Callable[[], object]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(stops, calls) of ``fn`` up to the pool's first call."""
    calls: list[tuple[str, str]] = []

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        f = frame.f_code.co_filename
        if event == "call" and f.startswith(ROOT) and f[len(ROOT) + 1:] in PARTS:
            calls.append((f[len(ROOT) + 1:], frame.f_code.co_name))

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    end = next((i for i, (f, _) in enumerate(calls) if f == END), len(calls))
    calls = calls[:end + 1]
    stops: list[tuple[str, str]] = []
    for f, name in calls:
        if not stops or stops[-1][0] != f:
            stops.append((f, name))
    return stops, calls


def _short(f: str) -> str:
    return f.rsplit("/", 1)[-1][:-3]


def main() -> None:
    root = Path(tempfile.mkdtemp())
    cfg = cfgmod.parse(yaml.safe_dump({"version": 1, "preload": {"enabled": False},
                                       "budgets": {"ram": "64MiB", "swap": "96MiB"}})
                       ).with_overrides(state_dir=root / "state")
    sampler = Sampler(root=cfg.telemetry.root, interval_s=1, use_jtop=False, use_nvml=False,
                      memory_total_override=None)
    sampler.start()
    budgets = cfgmod.resolve_budgets(cfg.budgets, sampler.snapshot().memory.total_bytes,
                                     shutil.disk_usage(root).total)
    events = EventBus(100)
    parts = build_parts(cfg, budgets, sampler, events)
    m = parts.manager
    m.start()
    try:
        for name in ("a", "b"):
            m.install_from(InstallSpec(name=name, tier="swap"),
                           str(modelgen.add_model(root / f"{name}.onnx")), None, None,
                           lambda *a: None)
        x = {"x": np.ones((1, 4), np.float32)}
        walks: list[tuple[str, Callable[[], object]]] = [
            ("Load(a)", lambda: m.load("a")),
            ("ModelInfer(b), cold", lambda: m.infer("b", None, x, None, {}))]
        for label, fn in walks:
            stops, calls = trace(fn)
            per = {f: sum(1 for g, _ in stops if g == f) for f in FACADE}
            print(f"{label}: {len(stops)} stops; "
                  + ", ".join(f"{_short(f)}.py {n}" for f, n in per.items()))
            for f in FACADE:
                names = [n for g, n in calls if g == f]
                print(f"   calls into {_short(f)}.py: {len(names)} ({', '.join(names)})")
            print("   " + " -> ".join(f"{_short(f)}.{n}" for f, n in stops))
    finally:
        parts.close()
        events.close()
        sampler.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
