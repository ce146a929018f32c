"""Shared pieces of the benchmarks: timing summaries, result rows, the environment header."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # daemon_harness, modelgen

K = TypeVar("K", bound=Hashable)


@dataclass
class Row:
    """One measured number against its SPEC target."""

    what: str
    target: str
    measured: str
    ok: bool | None  # None: informational, no target
    notes: str = ""


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # extra markdown tables
    method: str = ""

    def add(self, what: str, target: str, measured: str, ok: bool | None, notes: str = "") -> None:
        self.rows.append(Row(what, target, measured, ok, notes))

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        if self.method:
            out += [self.method, ""]
        if self.rows:
            out += ["| what | target | measured | result | notes |",
                    "| --- | --- | --- | --- | --- |"]
            for r in self.rows:
                verdict = "info" if r.ok is None else ("PASS" if r.ok else "MISS")
                out.append(f"| {r.what} | {r.target} | {r.measured} | {verdict} | {r.notes} |")
            out.append("")
        for t in self.tables:
            out += [t, ""]
        return "\n".join(out)


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) of samples in seconds."""
    s = sorted(samples)
    if not s:
        return float("nan"), float("nan")
    p50 = statistics.median(s)
    p99 = s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]
    return p50, p99


def time_calls(fn: Callable[[], object], n: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def time_alternating(fns: Mapping[K, Callable[[], object]], n: int, block: int = 5,
                     warmup: int = 5) -> dict[K, list[float]]:
    """``n`` timed calls of each function, in alternating blocks of ``block``: a slow spell of
    the machine hits every path alike (sequential runs of a 100+ ms model differ by more
    than the few ms of overhead they are meant to show)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[K, list[float]] = {k: [] for k in fns}
    while len(next(iter(out.values()))) < n:
        for k, fn in fns.items():
            for _ in range(block):
                t = time.perf_counter()
                fn()
                out[k].append(time.perf_counter() - t)
    return out


def ms(x: float) -> str:
    return f"{x * 1e3:.3f} ms"


def environment() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for mod in ("grpc", "google.protobuf", "onnxruntime", "numpy"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            versions.append(f"{mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            versions.append(f"{mod} (not installed)")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, check=False).stdout.strip()
    except OSError:
        rev = "?"
    return (f"- CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
            f"{platform.system()} {platform.release()}\n- {', '.join(versions)}\n- commit {rev}")
