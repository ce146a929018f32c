#!/usr/bin/env python3
"""Generate a synthetic, seeded request trace of a service robot, for the replay tool.

The robot moves between *activities* — with probability ``--routine`` the next step of its mission
script (a fixed loop per regime: day, night, warehouse), otherwise a random step of a Markov chain
whose transition weights depend on the hour of day — and each activity issues the model sequence
such a robot would::

    idle          nothing but the always-on streams
    patrol        detect every ~1 s (detect-night between 22:00 and 06:00), depth every ~2 s
    conversation  wakeword -> (user speaks 1-3 s) asr -> llm -> (answer) tts, 1-4 turns
    reading       detect, then ocr.det every ~1.5 s, each followed by 1-4 ocr.rec
    manipulation  detect -> segment -> pose, every 2-3 s
    greeting      face -> reid every ~1 s (usually followed by a conversation)
    search        clip every ~2 s, each followed by detect

On top of the activities:

* **always-on / periodic streams**: vad every ``--vad-period`` s; localize every 30 s and anomaly
  every 60 s (scaled by ``--periodic-scale``), with a little jitter;
* **bursts** (``--bursts-per-hour``): one vision model hammered at 5-10 Hz for 3-8 s;
* **one-off models** (``--oneoffs-per-hour``): calibration, diagnostics, QR / barcode readers,
  requested once or twice and then never again;
* **noise** (``--noise``): that fraction of extra requests to uniformly random models;
* **time of day**: ``--start-hour`` sets the simulated clock (``t`` starts at that hour, in
  seconds); at night patrols dominate and use ``detect-night``, talking is rare;
* **shift** (``--shift``): half-way through, the robot is re-tasked to warehouse work: reading,
  search and a new inspect sequence (depth -> segment -> clip) dominate, conversations become
  rare, localize runs every 10 s. A policy must notice and adapt.

Harder families (``bench/replay_bench.py``; each option off by default, so a seed's trace
without them is unchanged):

* **regime changes** (``--regime-every S``): the mission mix switches abruptly every S seconds,
  cycling day -> warehouse -> night (night patrols with ``detect-night``, whatever the hour);
* **many one-off models** (``--oneoff-models N``): N extra models (``oneoff-00`` ...,
  20-400 MB) that the one-off events use first, each once or twice, before the four usual ones:
  a scan of models that must not flush useful ones;
* **long idle periods** (``--idle-every S --idle-for D``): every S seconds the robot docks for D
  seconds (a random phase), and only its VAD keeps listening;
* **a slow loader** (``--load-scale X``): every load time in ``models.json`` times X (an SD card
  instead of NVMe): at X of about 6-10 the loader is busy most of the time at the trace's
  native pace.

Output: a JSONL trace (``edged.manager.memory.traces`` format, with durations) and ``models.json``
(name -> size_bytes, load_s) with realistic sizes, from a 2 MB VAD to a 1.5 GB LLM; load times
grow with size (disk read plus engine build / warm-up).

    python tools/gen_trace.py --seed 1 --duration 3600 --out trace.jsonl --models-out models.json
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from edged.manager.memory.traces import ModelCost, TraceEntry, write_models, write_trace

MB = 1 << 20


class Spec(NamedTuple):
    name: str
    size_mb: float
    load_s: float
    infer_ms: float


CATALOG: tuple[Spec, ...] = (
    Spec("vad", 2, 0.04, 1), Spec("wakeword", 6, 0.08, 3), Spec("asr", 290, 1.3, 350),
    Spec("llm", 1536, 7.5, 2500), Spec("tts", 180, 0.9, 400), Spec("detect", 90, 0.6, 25),
    Spec("detect-night", 95, 0.6, 30), Spec("ocr.det", 5, 0.12, 40),
    Spec("ocr.rec", 11, 0.18, 8), Spec("depth", 200, 1.1, 60), Spec("segment", 380, 1.9, 120),
    Spec("pose", 55, 0.4, 15), Spec("face", 30, 0.3, 10), Spec("reid", 45, 0.35, 8),
    Spec("clip", 600, 2.8, 70), Spec("localize", 140, 0.8, 90), Spec("anomaly", 25, 0.25, 20),
    Spec("calib", 20, 0.3, 200), Spec("diag", 8, 0.15, 50), Spec("qr", 3, 0.06, 5),
    Spec("barcode", 4, 0.07, 5),
)
ONEOFFS = ("calib", "diag", "qr", "barcode")
ACTIVITIES = ("idle", "patrol", "conversation", "reading", "manipulation", "greeting", "search")
# next-activity weights, by regime; rows follow ACTIVITIES
DAY = MappingProxyType({"idle": (0, 4, 2, 1, 1, 2, 1), "patrol": (3, 0, 1, 2, 1, 2, 1),
       "conversation": (2, 1, 0, 1, 3, 0, 3), "reading": (2, 2, 1, 0, 2, 0, 1),
       "manipulation": (2, 2, 1, 1, 0, 0, 1), "greeting": (0, 0, 9, 0, 0, 0, 1),
       "search": (1, 1, 1, 1, 3, 0, 0)})
NIGHT = MappingProxyType({a: (3, 8, 0, 1, 0, 0, 0) if a != "patrol" else (4, 0, 0, 1, 0, 0, 0)
                          for a in ACTIVITIES})
WAREHOUSE = MappingProxyType({a: (1, 1, 0, 4, 3, 0, 4) for a in ACTIVITIES})
# the mission scripts a routine robot loops through (--routine: how often it sticks to them)
MISSIONS = MappingProxyType({
    "day": ("patrol", "reading", "manipulation", "patrol", "greeting", "conversation", "search",
            "manipulation"),
    "night": ("patrol", "idle", "patrol", "reading"),
    "warehouse": ("reading", "search", "inspect", "manipulation", "reading", "idle")})
DURATION_S = MappingProxyType({
    "idle": (20, 90), "patrol": (60, 240), "conversation": (20, 90), "reading": (15, 60),
    "manipulation": (30, 90), "greeting": (10, 30), "search": (20, 60), "inspect": (20, 60)})


class Generator:
    """One trace: ``run()`` returns the entries in time order. All randomness from ``rng``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.rng = random.Random(args.seed)
        self.t0 = args.start_hour * 3600.0
        self.end = self.t0 + args.duration
        self.shift_at = self.t0 + args.duration / 2 if args.shift else float("inf")
        self.out: list[tuple[float, str]] = []
        self.unique = [s.name for s in extra_oneoffs(args.oneoff_models, args.seed)]
        self.idle: list[tuple[float, float]] = []  # docked: [start, end)
        if args.idle_every > 0 and args.idle_for > 0:
            t = self.t0 + self.rng.uniform(0, args.idle_every)
            while t < self.end:
                self.idle.append((t, t + args.idle_for))
                t += args.idle_every
        self.infer = {s.name: s.infer_ms / 1000 for s in (
            *CATALOG, *extra_oneoffs(args.oneoff_models, args.seed))}
        self.step = -1  # position in the current mission script

    def emit(self, t: float, model: str) -> None:
        if self.t0 <= t < self.end and (model == "vad" or not self.docked(t)):
            self.out.append((t, model))

    def docked(self, t: float) -> bool:
        return any(lo <= t < hi for lo, hi in self.idle)

    def regime(self, t: float) -> str:
        if self.a.regime_every > 0:
            cycle = ("day", "warehouse", "night")
            return cycle[int((t - self.t0) // self.a.regime_every) % 3]
        hour = int(t // 3600) % 24
        return "warehouse" if t >= self.shift_at else "night" if (
            hour >= 22 or hour < 6) else "day"

    def run(self) -> list[TraceEntry]:
        self.streams()
        t, activity = self.t0, "idle"
        while t < self.end:
            lo, hi = DURATION_S[activity]
            stop = min(t + self.rng.uniform(lo, hi), self.end)
            getattr(self, "do_" + activity.replace("-", "_"))(t, stop)
            t, activity = stop + self.rng.uniform(0.5, 3), self.next_activity(activity, stop)
        self.extras()
        self.out.sort()
        return [TraceEntry(t, m, max(0.001, self.rng.gauss(self.infer[m], self.infer[m] / 5)), 1)
                for t, m in self.out]

    def next_activity(self, current: str, t: float) -> str:
        regime = self.regime(t)
        if self.rng.random() < self.a.routine:  # the mission script: its next step
            mission = MISSIONS[regime]
            self.step = (self.step + 1) % len(mission)
            return mission[self.step]
        table = {"warehouse": WAREHOUSE, "night": NIGHT, "day": DAY}[regime]
        row = table.get(current, table["idle"])
        nxt = self.rng.choices(ACTIVITIES, weights=row)[0]
        if regime == "warehouse" and nxt == "manipulation" and self.rng.random() < 0.5:
            return "inspect"
        return nxt

    # -- streams that run all the time ----------------------------------------------------
    def streams(self) -> None:
        self.every("vad", self.a.vad_period, self.t0, self.end)
        scale = self.a.periodic_scale
        self.every("localize", 30 * scale, self.t0, min(self.end, self.shift_at))
        self.every("localize", 10 * scale, self.shift_at, self.end)
        self.every("anomaly", 60 * scale, self.t0, self.end)

    def every(self, model: str, period: float, start: float, stop: float) -> None:
        t = start + self.rng.uniform(0, period)
        while t < stop:
            self.emit(t, model)
            t += period * self.rng.uniform(0.95, 1.05)

    def extras(self) -> None:
        hours = self.a.duration / 3600
        for _ in range(round(self.a.bursts_per_hour * hours)):
            t, model = self.rng.uniform(self.t0, self.end), self.rng.choice(
                ("detect", "pose", "face", "ocr.rec", "depth"))
            for i in range(int(self.rng.uniform(3, 8) * self.rng.uniform(5, 10))):
                self.emit(t + i * 0.1, model)
        for k in range(round(self.a.oneoffs_per_hour * hours)):
            t, model = self.rng.uniform(self.t0, self.end), self.rng.choice(ONEOFFS)
            if k < len(self.unique):
                model = self.unique[k]
            for i in range(self.rng.choice((1, 1, 2))):
                self.emit(t + i * self.rng.uniform(1, 5), model)
        names = [s.name for s in CATALOG]
        for _ in range(round(self.a.noise * len(self.out))):
            self.emit(self.rng.uniform(self.t0, self.end), self.rng.choice(names))

    # -- activities: each issues its sequence between t and stop -------------------------
    def do_idle(self, t: float, stop: float) -> None:
        return None

    def do_patrol(self, t: float, stop: float) -> None:
        detector = "detect-night" if self.regime(t) == "night" else "detect"
        self.every(detector, 1.0, t, stop)
        self.every("depth", 2.0, t, stop)

    def do_conversation(self, t: float, stop: float) -> None:
        self.emit(t, "wakeword")
        t += self.rng.uniform(1, 3)
        for _ in range(self.rng.randint(1, 4)):
            if t >= stop:
                break
            self.emit(t, "asr")
            t += self.rng.uniform(0.2, 0.5)
            self.emit(t, "llm")
            t += self.rng.uniform(1.5, 4)
            self.emit(t, "tts")
            t += self.rng.uniform(2, 6)

    def do_reading(self, t: float, stop: float) -> None:
        self.emit(t, "detect")
        t += 0.3
        while t < stop:
            self.emit(t, "ocr.det")
            for _ in range(self.rng.randint(1, 4)):
                t += self.rng.uniform(0.05, 0.3)
                self.emit(t, "ocr.rec")
            t += self.rng.uniform(1, 2)

    def do_manipulation(self, t: float, stop: float) -> None:
        self.sequence(("detect", "segment", "pose"), t, stop, (2, 3))

    def do_inspect(self, t: float, stop: float) -> None:
        self.sequence(("depth", "segment", "clip"), t, stop, (2, 4))

    def do_greeting(self, t: float, stop: float) -> None:
        while t < stop:
            self.emit(t, "face")
            if self.rng.random() < 0.7:
                self.emit(t + 0.1, "reid")
            t += self.rng.uniform(0.8, 1.2)

    def do_search(self, t: float, stop: float) -> None:
        self.sequence(("clip", "detect"), t, stop, (1.5, 2.5))

    def sequence(self, models: tuple[str, ...], t: float, stop: float,
                 period: tuple[float, float]) -> None:
        while t < stop:
            for i, model in enumerate(models):
                self.emit(t + i * self.rng.uniform(0.1, 0.3), model)
            t += self.rng.uniform(*period)


def extra_oneoffs(n: int, seed: int) -> list[Spec]:
    """``--oneoff-models``: n one-off models, 20-400 MB, loading at the catalog's pace
    (about 5 ms per MB plus 0.1 s); their own random stream, so other draws are unchanged."""
    rng = random.Random(f"oneoffs-{seed}")
    out = []
    for i in range(n):
        size = rng.uniform(20, 400)
        out.append(Spec(f"oneoff-{i:02d}", round(size), round(0.1 + 0.005 * size, 3), 50))
    return out


def catalog_costs(oneoff_models: int = 0, seed: int = 1,
                  load_scale: float = 1.0) -> dict[str, ModelCost]:
    specs = (*CATALOG, *extra_oneoffs(oneoff_models, seed))
    return {s.name: ModelCost(int(s.size_mb * MB), s.load_s * load_scale) for s in specs}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same trace)")
    p.add_argument("--duration", type=float, default=3600, help="seconds of robot life")
    p.add_argument("--out", type=Path, required=True, help="trace JSONL to write")
    p.add_argument("--models-out", type=Path, help="models.json to write (sizes, load times)")
    p.add_argument("--shift", action="store_true", help="re-task the robot half-way through")
    p.add_argument("--start-hour", type=int, default=9, choices=range(24), metavar="H",
                   help="simulated hour of day at t=start (default 9)")
    p.add_argument("--vad-period", type=float, default=2.0, help="seconds between vad calls")
    p.add_argument("--periodic-scale", type=float, default=1.0,
                   help="multiply the periods of localize (30 s) and anomaly (60 s)")
    p.add_argument("--routine", type=float, default=0.5,
                   help="probability that the next activity follows the mission script "
                        "rather than the random activity chain (0: none, 1: always)")
    p.add_argument("--bursts-per-hour", type=float, default=6.0)
    p.add_argument("--oneoffs-per-hour", type=float, default=4.0)
    p.add_argument("--noise", type=float, default=0.02,
                   help="extra random requests, as a fraction of the trace (default 0.02)")
    p.add_argument("--regime-every", type=float, default=0.0, metavar="S",
                   help="switch the mission mix abruptly every S seconds (0: never)")
    p.add_argument("--oneoff-models", type=int, default=0, metavar="N",
                   help="N extra models used only once or twice (one-off events use them first)")
    p.add_argument("--idle-every", type=float, default=0.0, metavar="S",
                   help="dock every S seconds (0: never) ...")
    p.add_argument("--idle-for", type=float, default=0.0, metavar="D",
                   help="... for D seconds: only the VAD runs")
    p.add_argument("--load-scale", type=float, default=1.0, metavar="X",
                   help="multiply every load time in models.json (a slower disk)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration <= 0 or args.vad_period <= 0 or args.periodic_scale <= 0:
        print("gen_trace: --duration, --vad-period and --periodic-scale must be > 0",
              file=sys.stderr)
        return 2
    if min(args.regime_every, args.oneoff_models, args.idle_every, args.idle_for) < 0 or (
            args.load_scale <= 0):
        print("gen_trace: --regime-every, --oneoff-models, --idle-every and --idle-for must be "
              ">= 0, --load-scale > 0", file=sys.stderr)
        return 2
    entries = Generator(args).run()
    n = write_trace(args.out, entries)
    if args.models_out:
        write_models(args.models_out, catalog_costs(args.oneoff_models, args.seed,
                                                    args.load_scale))
    print(f"wrote {n} requests over {args.duration:.0f} s to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
