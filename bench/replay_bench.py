#!/usr/bin/env python3
"""Replay benchmark: generated robot traces through every policy; writes bench/replay_results.md.

    .venv/bin/python bench/replay_bench.py [--out bench/replay_results.md] [--jobs 2]

Traces (seeded, ``tools/gen_trace.py``): ``normal`` (the default robot: half of its activities
follow its mission script), ``shifted`` (re-tasked half-way), ``bursty`` (five times the bursts,
twice the rare models, 5% random requests) and ``unscripted`` (no mission script at all: the
hardest to predict), 90 minutes each from 09:00, at budgets of 2 GiB and 2.5 GiB for on-demand
models — what an 8 GB Orin Nano has left after the OS, the robot's own processes and the pinned
ram tier; and ``3 days``, the default robot for 72 hours from 06:00, nights included (22:00 to
06:00: night patrols with ``detect-night``, no talking), at 2 GiB: there edged's time of day,
learned on the previous days, comes into play.

Checks the SPEC's two targets for edged on each run — hit rate at least 90% of the offline
optimum's, at most half of LRU's cold loads — reports its stall against LRU's and the optimum's,
and micro-benchmarks the capacity check and selection over 200 models (SPEC: under 1 ms each).
Seeds 1-5 are measured here; the policy's knobs were tuned on seeds 11-17 only.
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
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
BUDGETS = MappingProxyType({"2 GiB": 2 << 30, "2.5 GiB": 5 << 29})
POLICIES = ("lru", "lfu", "furthest", "edged", "optimal")
NO_TOD = "edged without time of day"  # an ablation on the long runs, not a policy of its own


class Run(NamedTuple):
    name: str
    args: tuple[str, ...]  # tools/gen_trace.py's
    duration_s: int
    budgets: tuple[str, ...]


RUNS = (
    Run("normal", ("--seed", "1"), 5400, ("2 GiB", "2.5 GiB")),
    Run("shifted", ("--seed", "2", "--shift"), 5400, ("2 GiB", "2.5 GiB")),
    Run("bursty", ("--seed", "3", "--bursts-per-hour", "30", "--oneoffs-per-hour", "8",
                   "--noise", "0.05"), 5400, ("2 GiB", "2.5 GiB")),
    Run("unscripted", ("--seed", "4", "--routine", "0"), 5400, ("2 GiB", "2.5 GiB")),
    Run("3 days", ("--seed", "5", "--start-hour", "6"), 3 * 86400, ("2 GiB",)),
)
LONG_S = 6 * 3600  # longer runs replay each costly policy in a job of its own
Result = tuple[str, str, dict[str, object], int]  # run, budget, report, distinct models


def load_replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tools_replay", REPO / "tools" / "replay.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def generate(workdir: Path, run: Run) -> tuple[Path, Path]:
    out, models = workdir / f"{run.name.replace(' ', '-')}.jsonl", workdir / "models.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "gen_trace.py"), *run.args,
                    "--duration", str(run.duration_s), "--out", str(out), "--models-out",
                    str(models)], check=True, capture_output=True, cwd=REPO)
    return out, models


def run_one(job: tuple[str, str, str, str, tuple[str, ...]]) -> Result:
    name, budget_name, trace_path, models_path, policies = job
    replay = load_replay()
    from edged.manager.traces import read_models, read_trace

    trace, models = read_trace(Path(trace_path)), read_models(Path(models_path))
    if policies == (NO_TOD,):  # the ablation: edged's policy with its time of day switched off
        from dataclasses import asdict

        from edged.manager.policy import EdgedPolicy
        policy = EdgedPolicy(tod_weight=0.0)
        r = replay.Simulator(models, BUDGETS[budget_name], policy, policy.eviction_order,
                             preload=True).run(trace)
        report = {"policies": {NO_TOD: asdict(r)}, "budget_bytes": BUDGETS[budget_name],
                  "requests": len(trace)}
    else:
        report = replay.run_all(trace, models, BUDGETS[budget_name], policies)
    return name, budget_name, report, len({e.model for e in trace})


def jobs_for(paths: dict[str, tuple[Path, Path]]) -> list[tuple[str, str, str, str,
                                                               tuple[str, ...]]]:
    """One job per run and budget; a long run's edged and optimum get a job each. Longest
    first, so the pool's workers finish together."""
    jobs = []
    for run in RUNS:
        groups = ([("edged",), ("optimal",), (NO_TOD,), ("lru", "lfu", "furthest")]
                  if run.duration_s > LONG_S else [POLICIES])
        for b in run.budgets:
            for group in groups:
                weight = run.duration_s * (0.2 if group[0] == "lru" else 1.0)
                jobs.append((weight, (run.name, b, str(paths[run.name][0]),
                                      str(paths[run.name][1]), group)))
    return [job for _, job in sorted(jobs, key=lambda j: -j[0])]


def merge(parts: list[Result]) -> list[Result]:
    """The policies of one run and budget, from its jobs, back in one report, in RUNS order."""
    merged: dict[tuple[str, str], Result] = {}
    for name, b, report, distinct in parts:
        if (name, b) in merged:
            merged[(name, b)][2]["policies"].update(report["policies"])  # type: ignore[union-attr]
        else:
            merged[(name, b)] = (name, b, report, distinct)
    return [merged[(run.name, b)] for run in RUNS for b in run.budgets]


def micro_benchmarks() -> list[str]:
    """Median wall time of one capacity check and one selection over 200 models."""
    import itertools
    import random

    from edged.manager import planner
    from edged.manager.policy import EdgedPolicy, plan_demand
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
    def fit(x: float) -> str:  # most fit as things are, some after evicting, a few not
        return "now" if x < 0.8 else "evict" if x < 0.95 else "no"

    cands = [Candidate(f"c{i}", 1, ("asr",) if i % 2 else ("asr", "vad"), rng.random(),
                       rng.choice([None, 5.0, 20.0, 80.0]), rng.randint(5, 900) << 20,
                       rng.random() < 0.2, fit(rng.random()), rng.choice(["ram", "swap"]))
             for i in range(200)]

    clock = itertools.count()

    def edged_plan(r: planner.LoadRequest, rs: list[planner.Resident]) -> object:
        now = 3000.0 + next(clock) * 1e-3  # a new instant each call: no cached values
        return planner.plan(r, rs, budgets, memory,
                            eviction_order=lambda x: policy.eviction_order(x, now),
                            victim_cost=policy.victim_cost(now))

    def edged_demand(r: planner.LoadRequest, rs: list[planner.Resident]) -> object:
        now = 3000.0 + next(clock) * 1e-3
        return plan_demand(policy, r, rs, budgets, memory, now)

    cases = {
        "capacity check, 200 residents, fits as is": lambda: planner.plan(
            small, residents, budgets, memory),
        "capacity check, 200 residents, LRU evictions": lambda: planner.plan(
            req, residents, budgets, memory),
        "capacity check, 20 loaded of 200, edged-ordered evictions": lambda: edged_plan(
            req20, loaded20),
        "capacity check, 20 loaded of 200, edged's demand rule (plan_demand: two victim "
        "searches)": lambda: edged_demand(req20, loaded20),
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


def ratio(a: object, b: object) -> float | None:
    """a / b for two numbers, None when either is missing or b is 0."""
    if a is None or b is None or not float(b):  # type: ignore[arg-type]
        return None
    return float(a) / float(b)  # type: ignore[arg-type]


def section(name: str, budget: str) -> str:
    run = next(r for r in RUNS if r.name == name)
    return f"Budget {budget}" if run.duration_s <= LONG_S else f"{name}, budget {budget}"


def render(results: list[Result], micro: list[str], seconds: float) -> str:
    out = ["# Replay benchmark: edged's cache policy against LRU, LFU and the offline optimum",
           "", "Reproduce: `.venv/bin/python bench/replay_bench.py` (it generates the traces "
           "with `tools/gen_trace.py` and replays them with `tools/replay.py`; about "
           f"{seconds:.0f} s on the 2-core dev machine). Generated; do not edit by hand.", "",
           __doc__.split("\n\n")[2].replace("\n", " "), "",
           "Cold loads are requests that had to wait for a load (a preload still running when "
           "its request came counts too); the offline optimum is the fewest loads any "
           "policy that loads on demand could do (exact search, `tools/replay.py`; its loads "
           "take no time on a loader of their own, so its stall is a floor no online policy "
           "reaches); `furthest` is Belady's rule, a heuristic when sizes differ. First loads "
           "of each model (at least one per distinct model) are unavoidable for every policy. "
           "Stall / LRU's is each policy's stall over LRU's on the same run.", ""]
    checks = []
    for title in dict.fromkeys(section(n, b) for n, b, *_ in results):
        out += [f"## {title}", "",
                "| trace | policy | hit rate | cold loads | stall s | stall / LRU's "
                "| bytes loaded | wasted preloads |", "|---|---|---|---|---|---|---|---|"]
        for name, b, report, distinct in results:
            if section(name, b) != title:
                continue
            pol = report["policies"]
            assert isinstance(pol, dict)
            for p in POLICIES:
                r = pol[p]
                rel = ratio(r["stall_s"], pol["lru"]["stall_s"])
                out.append(f"| {name} | {p} | {fmt(r['hit_rate'], 'pct')} | "
                           f"{fmt(r['cold_loads'], '')} | {fmt(r['stall_s'], '')} | "
                           f"{'n/a' if rel is None else f'{rel:.2f}'} | "
                           f"{fmt(r['bytes_loaded'], 'gib')} | {fmt(r['wasted_preloads'], '')} |")
            checks.append(target_row(name, b, pol, distinct, report["requests"]))
        out.append("")
    passed = sum(1 for c in checks if c.count("pass") == 2)
    out += ["## Targets (SPEC: predictive preloading on robot traces)", "",
            "| trace | budget | requests | edged hit rate / optimum's | target >= 90% "
            "| edged cold loads / LRU's | target <= 50% | first loads left out "
            "| optimum's cold loads / LRU's | edged stall / LRU's | edged stall / optimum's |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *checks, "",
            f"Both targets met on {passed} of {len(checks)} runs.", "",
            analysis(results), "",
            "## Capacity check and selection (SPEC: under 1 ms over 200 models)", "",
            "| what | median | target |", "|---|---|---|", *micro, ""]
    return "\n".join(out)


def target_row(name: str, budget: str, pol: dict[str, dict[str, object]], distinct: int,
               requests: object) -> str:
    edged, lru, best = pol["edged"], pol["lru"], pol["optimal"]
    hit = ratio(edged["hit_rate"], best["hit_rate"])
    hit_cells = "n/a | n/a" if hit is None else f"{hit:.1%} | {'pass' if hit >= 0.9 else 'FAIL'}"
    e_cold, l_cold = int(edged["cold_loads"]), int(lru["cold_loads"])  # type: ignore[call-overload]
    cold = e_cold / l_cold if l_cold else 0.0
    warm = (e_cold - distinct) / max(1, l_cold - distinct)
    opt = ratio(best["cold_loads"], l_cold)
    s_lru, s_opt = ratio(edged["stall_s"], lru["stall_s"]), ratio(edged["stall_s"],
                                                                   best["stall_s"])
    return (f"| {name} | {budget} | {requests} | {hit_cells} | {e_cold}/{l_cold} = "
            f"{cold:.1%} | {'pass' if cold <= 0.5 else 'FAIL'} | {warm:.0%} | "
            f"{'n/a' if opt is None else f'{opt:.0%}'} | "
            f"{'n/a' if s_lru is None else f'{s_lru:.2f}'} | "
            f"{'n/a' if s_opt is None else f'{s_opt:.2f}'} |")


def tod_effect(edged: dict[str, object], no_tod: dict[str, object] | None) -> str:
    """What the time of day changed on a long run, measured against the ablation."""
    if no_tod is None:
        return "(The run without it is missing.)"
    with_, without = int(edged["cold_loads"]), int(no_tod["cold_loads"])  # type: ignore[call-overload]
    s_with, s_without = float(edged["stall_s"]), float(no_tod["stall_s"])  # type: ignore[arg-type]
    change = (with_ - without) / without if without else 0.0
    verdict = ("it pays" if with_ < without and s_with <= s_without else
               "it changes little" if abs(change) < 0.02 else "it does not pay here")
    return (f"Switched off (same trace and budget), edged makes {without} cold loads and "
            f"stalls {s_without:.0f} s, against {with_} and {s_with:.0f} s with it "
            f"({change:+.1%} cold loads with it): {verdict}. The generator's days are alike, "
            "and the renewal and transition estimates relearn the night within minutes.")


def analysis(results: list[Result]) -> str:
    """The discussion, with its numbers taken from this run."""
    rows = []
    for name, b, report, _ in results:
        p = report["policies"]
        assert isinstance(p, dict)
        rows.append((name, b, p["edged"], p["lru"], p["optimal"]))

    def num(r: dict[str, object], key: str) -> float:
        return float(r[key])  # type: ignore[arg-type]

    n = len(rows)
    cold = [(name, b, num(e, "cold_loads"), num(lr, "cold_loads")) for name, b, e, lr, _ in rows]
    missed = [(name, b, ec, lc) for name, b, ec, lc in cold if ec > 0.5 * lc]
    shares = [ec / lc for *_, ec, lc in cold]
    opt = [(num(e, "cold_loads"), num(o, "cold_loads") / num(lr, "cold_loads"))
           for *_, e, lr, o in rows if o["cold_loads"] is not None]
    below_opt = sum(1 for *_, e, _, o in rows
                    if o["cold_loads"] is not None and num(e, "cold_loads") < num(o, "cold_loads"))
    hit_e = [num(e, "hit_rate") / num(o, "hit_rate") for *_, e, _, o in rows
             if o["hit_rate"] is not None]
    hit_l = [num(lr, "hit_rate") / num(o, "hit_rate") for *_, lr, o in rows
             if o["hit_rate"] is not None]
    lower_hit = sum(1 for *_, e, lr, _ in rows if num(e, "hit_rate") < num(lr, "hit_rate"))
    s_lru = [num(e, "stall_s") / num(lr, "stall_s") for *_, e, lr, _ in rows]
    s_opt = [num(e, "stall_s") / num(o, "stall_s") for *_, e, _, o in rows
             if o["stall_s"] is not None]
    more_bytes = [num(e, "bytes_loaded") / num(lr, "bytes_loaded") for *_, e, lr, _ in rows]
    wasted = [num(e, "wasted_preloads") / max(1.0, num(e, "preloads")) for *_, e, _, _ in rows]
    long_rows = [(name, b, e, lr, res[2]["policies"].get(NO_TOD))  # type: ignore[union-attr]
                 for (name, b, e, lr, _), res in zip(rows, results, strict=True)
                 if next(r for r in RUNS if r.name == name).duration_s > LONG_S]

    def span(xs: list[float], f: str = ".0%") -> str:
        if not xs:
            return "n/a"
        lo, hi = f"{min(xs):{f}}", f"{max(xs):{f}}"
        return lo if lo == hi else f"{lo}-{hi}"

    first_loads = span([float(res[3]) for res in results], ".0f")

    if missed:
        worst = max(missed, key=lambda m: m[2] / m[3])
        where = ", ".join(f"{name} at {b} ({int(ec)} cold loads where {int(0.5 * lc)} would "
                          f"do: {ec / lc:.1%})" for name, b, ec, lc in missed)
        why = ("where memory is tightest: at 2 GiB a conversation's three models (asr, llm, "
               "tts: 2.0 GB) fill the budget, every periodic or stray request during it pushes "
               "one of them out, and the LLM (1.5 GiB, 7.5 s to load) cannot be preloaded in "
               "time after a wake word" if all(b == "2 GiB" for _, b, _, _ in missed) else
               "where activities switch at random (no warning to preload on) and where the "
               "LLM (1.5 GiB, 7.5 s to load) cannot be preloaded in time after a wake word")
        half = (f"* **Half of LRU's cold loads** is met on {n - len(missed)} of {n} runs and "
                f"missed on {where}; the worst by {(worst[2] / worst[3] - 0.5) * 100:.1f} "
                f"percentage points. The misses are {why}.")
    else:
        half = (f"* **Half of LRU's cold loads** is met on every run: edged needs "
                f"{span(shares, '.1%')} of LRU's cold loads.")
    opt_line = ""
    if opt:
        opt_line = (f" The *exact offline optimum* of demand loading needs "
                    f"{span([o for _, o in opt])} of LRU's (last but two column); edged needs "
                    f"fewer cold loads than that optimum on {below_opt} of {len(opt)} runs: "
                    "preloads that land in time are loads but not cold loads, and every "
                    f"policy pays at least one cold load per distinct model ({first_loads} here; "
                    "the \"first loads left out\" column removes them).")
    stall_word = ("below LRU's on every run" if max(s_lru) < 1.0 else
                  f"below LRU's on {sum(1 for s in s_lru if s < 1.0)} of {n} runs")
    lines = [
        "### What the numbers say", "",
        f"* **Hit rate**: edged's is {span(hit_e, '.1%')} of the offline optimum's (the target "
        f"asks for 90%), but LRU's is {span(hit_l, '.1%')}: most requests go to the VAD and "
        "to models every policy keeps resident, so this target does not tell policies apart. "
        f"Edged's hit rate is below LRU's on {lower_hit} of {n} runs.",
        half + opt_line,
        f"* **Stall**: edged's is {stall_word} ({span(s_lru, '.2f')}x LRU's) and "
        f"{span(s_opt, '.2f')}x the optimum's, whose loads take no time and never queue; "
        "edged's requests still wait for the LLM's 7.5 s loads and behind one another on "
        "the one loader, and a demand load cancels a running preload.",
        f"* **The price**: edged reads {span(more_bytes, '.1f')}x the bytes LRU reads "
        f"(preloads, wasted ones included: {span(wasted)} of its preloads are cancelled, or "
        "evicted or left before their first use).",
    ]
    for name, b, e, lr, nt in long_rows:
        lines.append(
            f"* **{name}** ({b}): {int(num(e, 'cold_loads'))} cold loads against LRU's "
            f"{int(num(lr, 'cold_loads'))} ({num(e, 'cold_loads') / num(lr, 'cold_loads'):.1%}), "
            f"stall {num(e, 'stall_s') / num(lr, 'stall_s'):.2f}x LRU's, over nights and days. "
            "The time of day (sessions per hour of previous days) is learned and used from "
            f"the second day on. {tod_effect(e, nt)}")
    lines.append(
        "* The policy's knobs (preload horizon and threshold, miss cost, margins, onset "
        "gap) were tuned on other seeds (11-17) than the ones measured here (1-5), over "
        "the same kinds of trace, 90 minutes and 2 days long.")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "replay_results.md")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {run.name: generate(Path(tmp), run) for run in RUNS}
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = merge(list(pool.map(run_one, jobs_for(paths))))
    micro = micro_benchmarks()
    text = render(results, micro, time.perf_counter() - started)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
