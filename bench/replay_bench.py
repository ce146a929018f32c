#!/usr/bin/env python3
"""Replay benchmark: generated robot traces through every policy; writes bench/replay_results.md.

    .venv/bin/python bench/replay_bench.py [--out bench/replay_results.md] [--jobs 2]

Traces (seeded, 90 minutes each, ``tools/gen_trace.py``): ``normal`` (the default robot: half of
its activities follow its mission script), ``shifted`` (re-tasked half-way), ``bursty`` (five
times the bursts, twice the rare models, 5% random requests) and ``unscripted`` (no mission
script at all: the hardest to predict). Budgets: 2 GiB and 2.5 GiB for on-demand models — what an
8 GB Orin Nano has left after the OS, the robot's own processes and the pinned ram tier.

Checks the SPEC's two targets for edged on each run — hit rate at least 90% of the offline
optimum's, at most half of LRU's cold loads — and micro-benchmarks the capacity check and
selection over 200 models (SPEC: under 1 ms each).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import MappingProxyType, ModuleType

REPO = Path(__file__).resolve().parent.parent
TRACES = MappingProxyType({
    "normal": ["--seed", "1"],
    "shifted": ["--seed", "2", "--shift"],
    "bursty": ["--seed", "3", "--bursts-per-hour", "30", "--oneoffs-per-hour", "8",
               "--noise", "0.05"],
    "unscripted": ["--seed", "4", "--routine", "0"],
})
DURATION_S = 5400
BUDGETS = MappingProxyType({"2 GiB": 2 << 30, "2.5 GiB": 5 << 29})


def load_replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tools_replay", REPO / "tools" / "replay.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def generate(workdir: Path, name: str) -> tuple[Path, Path]:
    out, models = workdir / f"{name}.jsonl", workdir / "models.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_trace.py"), *TRACES[name],
                    "--duration", str(DURATION_S), "--out", str(out), "--models-out",
                    str(models)], check=True, capture_output=True, cwd=REPO)
    return out, models


def run_one(job: tuple[str, str, str, str]) -> tuple[str, str, dict[str, object], int]:
    name, budget_name, trace_path, models_path = job
    replay = load_replay()
    from edged.manager.traces import read_models, read_trace

    trace = read_trace(Path(trace_path))
    report = replay.run_all(trace, read_models(Path(models_path)), BUDGETS[budget_name])
    return name, budget_name, report, len({e.model for e in trace})


def micro_benchmarks() -> list[str]:
    """Median wall time of one capacity check and one selection over 200 models."""
    import itertools
    import random

    from edged.manager import planner
    from edged.manager.policy import EdgedPolicy
    from edged.manager.selection import Candidate, select

    rng = random.Random(1)
    residents = [planner.Resident(f"m{i}:1", "ram" if i % 10 == 0 else "swap",
                                  rng.randint(5, 200) << 20, rng.choice([0, 0, 0, 1]), False)
                 for i in range(200)]
    budgets = planner.Budgets(40 << 30, 40 << 30, 1 << 30)
    memory = planner.Memory(2 << 30, 0, swap_total_bytes=0)
    req = planner.LoadRequest("new:1", "swap", 3 << 30)  # needs about 2 GiB of evictions
    small = planner.LoadRequest("new:1", "swap", 1 << 30)  # ... and this one fits as is
    policy = EdgedPolicy()
    for i in range(200):
        policy.set_model(f"m{i}", residents[i].bytes, rng.uniform(0.1, 3.0))
    for t in range(3000):
        policy.observe(f"m{rng.randrange(200)}", float(t))
    loaded20 = [r for r in residents if r.in_flight == 0][:20]
    req20 = planner.LoadRequest("new:1", "swap", 2 << 30)
    cands = [Candidate(f"c{i}", 1, ("asr",) if i % 2 else ("asr", "vad"), rng.random(),
                       rng.choice([None, 5.0, 20.0, 80.0]), rng.randint(5, 900) << 20,
                       rng.random() < 0.2, rng.random() < 0.8, rng.choice(["ram", "swap"]))
             for i in range(200)]

    clock = itertools.count()

    def edged_plan(r: planner.LoadRequest, rs: list[planner.Resident]) -> object:
        now = 3000.0 + next(clock) * 1e-3  # a new instant each call: no cached values
        return planner.plan(r, rs, budgets, memory,
                            eviction_order=lambda x: policy.eviction_order(x, now),
                            victim_cost=policy.victim_cost(now))

    cases = {
        "capacity check, 200 residents, fits as is": lambda: planner.plan(
            small, residents, budgets, memory),
        "capacity check, 200 residents, LRU evictions": lambda: planner.plan(
            req, residents, budgets, memory),
        "capacity check, 20 loaded of 200, edged-ordered evictions": lambda: edged_plan(
            req20, loaded20),
        "capacity check, 200 residents, edged-ordered evictions (not a target: 20 are "
        "loaded at the SPEC's scale)": lambda: edged_plan(req, residents),
        "selection, 200 candidates": lambda: select("asr", "balanced", cands),
    }
    lines = []
    for label, fn in cases.items():
        times = []
        for _ in range(300):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1000
        verdict = "info" if "not a target" in label else "pass" if ms < 1.0 else "FAIL"
        lines.append(f"| {label} | {ms:.3f} ms | {verdict} |")
    return lines


def fmt(value: object, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{float(value):.2%}"  # type: ignore[arg-type]
    if kind == "gib":
        return f"{int(value) / (1 << 30):.1f} GiB"  # type: ignore[call-overload]
    return str(value)


def render(results: list[tuple[str, str, dict[str, object], int]], micro: list[str],
           seconds: float) -> str:
    out = ["# Replay benchmark: edged's cache policy against LRU, LFU and the offline optimum",
           "", "Reproduce: `.venv/bin/python bench/replay_bench.py` (it generates the traces "
           "with `tools/gen_trace.py` and replays them with `tools/replay.py`; about "
           f"{seconds:.0f} s on the 2-core dev machine). Generated; do not edit by hand.", "",
           __doc__.split("\n\n")[2].replace("\n", " "), "",
           "Cold loads are requests that had to wait for a load (a preload still running when "
           "its request came counts too); the offline optimum is the fewest loads any "
           "policy that loads on demand could do (exact search, `tools/replay.py`); `furthest` "
           "is Belady's rule, a heuristic when sizes differ. First loads of each model (at "
           "least one per distinct model) are unavoidable for every policy.", ""]
    checks = []
    for budget_name in BUDGETS:
        out += [f"## Budget {budget_name}", "",
                "| trace | policy | hit rate | cold loads | stall s | bytes loaded "
                "| wasted preloads |", "|---|---|---|---|---|---|---|"]
        for name, b, report, distinct in results:
            if b != budget_name:
                continue
            pol = report["policies"]
            assert isinstance(pol, dict)
            for p in ("lru", "lfu", "furthest", "edged", "optimal"):
                r = pol[p]
                out.append(f"| {name} | {p} | {fmt(r['hit_rate'], 'pct')} | "
                           f"{fmt(r['cold_loads'], '')} | {fmt(r['stall_s'], '')} | "
                           f"{fmt(r['bytes_loaded'], 'gib')} | {fmt(r['wasted_preloads'], '')} |")
            checks.append(target_row(name, budget_name, pol, distinct, report["requests"]))
        out.append("")
    passed = sum(1 for c in checks if c.count("pass") == 2)
    out += ["## Targets (SPEC: predictive preloading on robot traces)", "",
            "| trace | budget | requests | edged hit rate / optimum's | target >= 90% "
            "| edged cold loads / LRU's | target <= 50% | first loads left out "
            "| optimum's cold loads / LRU's |",
            "|---|---|---|---|---|---|---|---|---|", *checks, "",
            f"Both targets met on {passed} of {len(checks)} runs.", "",
            analysis(results), "",
            "## Capacity check and selection (SPEC: under 1 ms over 200 models)", "",
            "| what | median | target |", "|---|---|---|", *micro, ""]
    return "\n".join(out)


def analysis(results: list[tuple[str, str, dict[str, object], int]]) -> str:
    """The discussion, with its numbers taken from this run."""
    runs = [r[2]["policies"] for r in results]
    pairs = [(int(p["edged"]["cold_loads"]), int(p["lru"]["cold_loads"]),  # type: ignore[index]
              p["optimal"]["cold_loads"], p["edged"]["hit_rate"], p["lru"]["hit_rate"],  # type: ignore[index]
              int(p["edged"]["bytes_loaded"]), int(p["lru"]["bytes_loaded"]))  # type: ignore[index]
             for p in runs]
    opt = [o / lc for _, lc, o, *_ in pairs if o is not None]
    below_opt = sum(1 for e, _, o, *_ in pairs if o is not None and e <= o)
    worst = max(e / lc for e, lc, *_ in pairs)
    lower_hit = sum(1 for _, _, _, eh, lh, *_ in pairs if eh < lh)
    hit_gap = max(1 - float(p["edged"]["hit_rate"]) / float(p["optimal"]["hit_rate"])  # type: ignore[index]
                  for p in runs if p["optimal"]["hit_rate"] is not None)  # type: ignore[index]
    more_bytes = min(eb / lb for *_, eb, lb in pairs), max(eb / lb for *_, eb, lb in pairs)
    span = f"{min(opt):.0%}-{max(opt):.0%}" if opt else "n/a"
    return f"""### What the numbers say

* **Hit rate**: edged's is at most {hit_gap:.1%} below the offline optimum's on every run
  (the target allows 10%): most requests go to models any sensible policy keeps resident.
* **Half of LRU's cold loads** is met on some runs and missed by up to
  {(worst - 0.5) * 100:.1f} percentage points on the others (worst: {worst:.1%}). Even the
  *exact offline optimum* of demand loading needs {span} of LRU's cold loads on these traces
  (last column), and every policy pays at least one cold load per distinct model (about 21
  here; the "first loads left out" column removes them). Edged needs fewer cold loads than
  that optimum on {below_opt} of {len(pairs)} runs: only preloads that land in time get below
  it, and activity switches (the random part of the generator, all of `unscripted`) give little
  warning, while a re-tasked robot (`shifted`) costs the minutes it takes to relearn.
* **The price**: edged reads {more_bytes[0]:.1f}-{more_bytes[1]:.1f}x the bytes LRU reads
  (preloads, wasted ones included), and its stall is not much below LRU's: the LLM (1.5 GiB,
  7.5 s to load) cannot be preloaded in time after a wake word, a demand load cancels a running
  preload (preloads yield to demand), and requests queue behind long loads on the one loader.
  On {lower_hit} of {len(pairs)} runs that queueing makes edged's hit rate (requests served
  without waiting) slightly lower than LRU's although it has fewer cold loads.
* The policy's knobs (preload threshold, miss cost, margins) were tuned on other seeds (11-17)
  than the ones measured here (1-4), over the same kinds of trace."""


def target_row(name: str, budget: str, pol: dict[str, dict[str, object]], distinct: int,
               requests: object) -> str:
    edged, lru, best = pol["edged"], pol["lru"], pol["optimal"]
    if best["hit_rate"] is None:
        hit = "n/a"
        hit_ok = "n/a"
    else:
        ratio = float(edged["hit_rate"]) / float(best["hit_rate"])  # type: ignore[arg-type]
        hit, hit_ok = f"{ratio:.1%}", "pass" if ratio >= 0.9 else "FAIL"
    e_cold, l_cold = int(edged["cold_loads"]), int(lru["cold_loads"])  # type: ignore[call-overload]
    cold = e_cold / l_cold if l_cold else 0.0
    warm = (e_cold - distinct) / max(1, l_cold - distinct)
    opt = "n/a" if best["cold_loads"] is None else (
        f"{int(best['cold_loads']) / l_cold:.0%}")  # type: ignore[call-overload]
    return (f"| {name} | {budget} | {requests} | {hit} | {hit_ok} | {e_cold}/{l_cold} = "
            f"{cold:.1%} | {'pass' if cold <= 0.5 else 'FAIL'} | {warm:.0%} | {opt} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "replay_results.md")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: generate(Path(tmp), name) for name in TRACES}
        jobs = [(name, b, str(paths[name][0]), str(paths[name][1]))
                for name in TRACES for b in BUDGETS]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(run_one, jobs))
    micro = micro_benchmarks()
    text = render(results, micro, time.perf_counter() - started)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
