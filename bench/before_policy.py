#!/usr/bin/env python3
"""The preloading policy from before issue 16, replayed by today's simulator: the numbers that
``bench/replay_bench.py``'s "not worse than before" target compares with.

    .venv/bin/python bench/before_policy.py [--commit d58ce7c] [--jobs 2] [--extra-seeds 4]

Issue 16 asks that no family get worse than the numbers ``bench/replay_results.md`` had when it
was filed. Those were measured with one loader, by that day's simulator, on 9 rows. Today's
simulator differs (the preloader's pass meets a busy loader differently; loads can run side by
side, as the daemon runs them), so comparing with numbers from then mixes the policy's change
with the simulator's. This script takes the policy code of that day (``edged/`` at
``--commit``, the last commit before issue 16's policy work; ``git archive``, so it needs the
history) and runs it through today's ``tools/replay.py`` on the traces, budgets and held-out
seeds ``replay_bench`` uses, with both loaders and its queue limit: only the policy differs.
On the 9 rows of then, with one loader and no queue limit (as then), it reproduced that day's
published numbers to within 1.2% of stall and 3% of cold loads (the simulator's changes since):
normal 2 GiB 89 cold loads, 291 s (published: 89, 294 s), bursty 2 GiB 161, 699 s (156, 691 s),
the 3 days 3074, 13452 s (3080, 13353 s). With the queue limit some requests of a burst are
refused instead of waiting (unscripted 2 GiB: 31, stall 476 -> 390 s).

A run the old policy fails on gets its error in place of numbers (the policy of then divided
by zero learning a gap on ``recorded 15 min``, a trace recorded later). It writes
``bench/before_policy.json`` (committed: it takes a few minutes and an old tree to
make, and the bench reads it on every run). Today's replay imports the package by its layout
of now; ``ADAPT`` rewrites those imports for the layout of then, and the script stops with the
line it could not find when the replay's imports change.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench is a package of the checkout

from bench import replay_bench as rb  # noqa: E402

COMMIT = "d58ce7c"  # the last commit before issue 16's policy work (879fa81 is the first)
OUT = REPO / "bench" / "before_policy.json"
LOADERS = ("single", "shared")
# today's tools/replay.py against the package as it was at COMMIT: (now, then)
ADAPT = (
    ("from edged.manager.memory import planner\n", "from edged.manager import planner\n"),
    ("from edged.manager.memory.capacity import plan_demand, plan_preload\n"
     "from edged.manager.memory.policy import CachePolicy, make_policy\n",
     "from edged.manager.policy import CachePolicy, make_policy, plan_demand, plan_preload\n"),
    ("from edged.manager.memory.traces import", "from edged.manager.traces import"),
    ("from edged.values import Budgets\n", "from edged.manager.planner import Budgets\n"),
    ("Budgets(ram=0, swap=budget, reserve=0)",
     "Budgets(ram_bytes=0, swap_bytes=budget, reserve_bytes=0)"),
    ("self.budgets.swap - used", "self.budgets.swap_bytes - used"),
    # the old policy has no shadow caches to size
    ("policy.set_capacity(budget)", 'getattr(policy, "set_capacity", lambda b: None)(budget)'),
)


def old_tree(commit: str, into: Path) -> Path:
    """``edged/`` at ``commit`` under ``into``, with today's replay adapted to it; the path of
    that replay (run from ``into``, ``import edged`` finds the old package)."""
    tar = subprocess.run(["git", "archive", commit, "edged"], cwd=REPO, check=True,
                         capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    text = (REPO / "tools" / "replay.py").read_text()
    for now, then in ADAPT:
        if now not in text:
            raise SystemExit(f"tools/replay.py no longer has {now.strip()!r}: update ADAPT")
        text = text.replace(now, then)
    replay = into / "replay_old.py"
    replay.write_text(text)
    return replay


def measure(replay: Path, job: tuple[str, str, Path, Path, str]) -> dict[str, object]:
    name, label, trace_path, models_path, loader = job
    from edged.manager.memory.traces import read_models, read_trace

    budget, _ = rb.budget_for(label, read_trace(trace_path), read_models(models_path))
    done = subprocess.run(
        [sys.executable, str(replay), "--trace", str(trace_path), "--models", str(models_path),
         "--budget", str(budget), "--policies", "edged", "--loader", loader,
         "--queue-limit", str(rb.QUEUE_LIMIT), "--json"],
        cwd=replay.parent, capture_output=True, text=True,
        env={"PYTHONPATH": str(replay.parent), "PATH": "/usr/bin:/bin"})
    row: dict[str, object] = {"run": name, "budget": label, "loader": loader}
    if done.returncode != 0:  # the old policy failed on this trace: said, not hidden
        lines = done.stderr.strip().splitlines()
        return {**row, "error": lines[-1] if lines else f"exit {done.returncode}"}
    return {**row, **json.loads(done.stdout)["policies"]["edged"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default=COMMIT)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--extra-seeds", type=int, default=rb.EXTRA_SEEDS, metavar="K",
                   help="as replay_bench's: each generated family on K more held-out seeds")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    runs = rb.RUNS
    more = tuple(r for rs in rb.extra_runs(runs, args.extra_seeds).values() for r in rs)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        replay = old_tree(args.commit, Path(tmp) / "old")
        paths = {run.name: rb.generate(Path(tmp), run, tune=False) for run in (*runs, *more)}
        jobs = [(run.name, b, *paths[run.name], loader)
                for run in sorted((*runs, *more), key=lambda r: -r.duration_s)
                for b in run.budgets for loader in LOADERS]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(lambda j: measure(replay, j), jobs))
    sha = subprocess.run(["git", "rev-parse", args.commit], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps({
        "commit": sha, "made_by": "bench/before_policy.py",
        "rows": sorted(rows, key=lambda r: (str(r["run"]), str(r["budget"]),
                                            str(r["loader"])))}, indent=1) + "\n")
    print(f"{len(rows)} rows in {time.perf_counter() - started:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
