"""Selection: the best installed model for a task and a priority, and why, in words.

Pure: the manager gathers the candidates (catalog + residency + a capacity dry run for
``fit``) and this module only ranks them, so ``edgectl select`` and the daemon's own choice
can never disagree. The rules, in order:

1. only models that list the task are considered (others are not mentioned);
2. ``storage``-tier models are not selectable (they need a promote first), and the caller's hard
   limits (``max_bytes``, ``max_latency_ms``) rule models out — each with its reason;
3. the mode: ``manual`` answers with the model pinned for the task and nothing else (no pin, or
   a pin that fails rule 2, is no answer, with the reason); ``hybrid`` takes the pin when it
   passes rule 2 and chooses automatically otherwise, saying why; ``auto`` ignores pins;
4. otherwise models that are loaded or fit in memory as things are rank first, then those that
   fit after evicting idle models, then those that do not fit at all;
5. then the priority: ``quality`` (highest quality, then lowest latency), ``speed`` (lowest
   measured latency, then highest quality; unknown latency ranks last, smaller models first),
   ``balanced`` (quality and log-latency, each scaled to 0..1 across the eligible models,
   weighed equally);
6. a loaded model wins ties (no load time at all), then the name and the newest version, so the
   answer is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edged.units import format_size
from edged.values import ModelKey

PRIORITIES = ("speed", "quality", "balanced")
MODES = ("auto", "manual", "hybrid")
FITS = ("now", "evict", "no")  # as things are / after evicting idle models / not at all
MAX_RUNNERS_UP = 10  # the best of the rest, each with its reason; the others are counted
_TIE = 1e-9


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 2-3x, and 200 are built per call
class Candidate:
    name: str
    version: int
    tasks: tuple[str, ...]
    quality: float
    latency_ms: float | None
    footprint_bytes: int
    loaded: bool
    fit: str  # one of FITS
    tier: str
    problem: str = ""  # why it cannot load at all (a missing artifact, another TensorRT)

    @property
    def fits_now(self) -> bool:
        return self.loaded or self.fit == "now"

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.name, self.version)


@dataclass(frozen=True)
class Selection:
    choice: Candidate | None
    reasons: tuple[str, ...]
    runners_up: tuple[tuple[Candidate, str], ...]
    mode: str = "auto"
    scores: tuple[tuple[str, float], ...] = ()  # key -> the priority's criterion (see score())


def select(task: str, priority: str, candidates: Sequence[Candidate], *,
           max_bytes: int | None = None, max_latency_ms: float | None = None,
           pinned: str | None = None, mode: str = "hybrid") -> Selection:
    """Pick the model for ``task``; see the module docstring for the rules."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    able = [c for c in candidates if task in c.tasks]
    if not able:
        return Selection(None, (f"no installed model can do task '{task}'",), (), mode)
    eligible: list[Candidate] = []
    out: list[tuple[Candidate, str]] = []
    for c in able:
        why = _excluded(c, max_bytes, max_latency_ms)
        if why:
            out.append((c, why))
        else:
            eligible.append(c)
    out.sort(key=lambda cw: (cw[0].name, -cw[0].version))
    notes: list[str] = []
    chosen = None
    if mode == "manual" and not pinned:
        return Selection(None, (f"manual mode: no model is pinned for '{task}'",),
                         tuple((c, "not pinned (manual mode)") for c in able), mode)
    if mode != "auto":
        chosen = _pinned(pinned, task, candidates, eligible, out, notes)
        if chosen is None and mode == "manual":
            return Selection(None, tuple(n.replace("choosing automatically", "manual mode: "
                                                   "no answer") for n in notes),
                             tuple(out), mode)
    if not eligible:
        return Selection(None, (*notes, f"no model for '{task}' is selectable: "
                                + "; ".join(f"{c.key} {why}" for c, why in out)), tuple(out),
                         mode)
    score, speed = _primary(priority, eligible), priority == "speed"
    keyed = [((_FIT_RANK[c.fit] if not c.loaded else 0, round(score(c), 9), not c.loaded,
               -c.quality if speed else _latency(c), c.footprint_bytes if speed else 0,
               c.name, -c.version), c) for c in eligible]
    keyed.sort(key=_first)
    best = chosen or keyed[0][1]
    top = next(k for k, c in keyed if c is best)
    reasons = [*notes, *_why_chosen(best, task, priority, chosen is not None)]
    ranked = [(k, c) for k, c in keyed if c is not best]
    losers = [(c, _why_lost(c, k, best, top, priority, chosen is not None))
              for k, c in ranked[:MAX_RUNNERS_UP]]
    excluded = out[:max(0, MAX_RUNNERS_UP - len(losers))]
    more = len(ranked) + len(out) - len(losers) - len(excluded)
    if more:
        reasons.append(f"{more} more models can do '{task}' and rank lower (not listed)")
    scores = tuple((c.key, criterion(priority, score, c))
                   for _, c in [(top, best), *ranked[:MAX_RUNNERS_UP]])
    return Selection(best, tuple(reasons), tuple(losers + excluded), mode, scores)


_FIT_RANK = {"now": 0, "evict": 1, "no": 2}


def _first(kc: tuple[tuple[object, ...], Candidate]) -> tuple[object, ...]:
    return kc[0]


def criterion(priority: str, score: Callable[[Candidate], float], c: Candidate) -> float:
    """The number the priority ranks by, in its natural direction: quality (higher is
    better), measured latency in ms (lower is better; 0 when unknown), or the balance of the
    two in -1..1 (higher is better)."""
    if priority == "quality":
        return c.quality
    if priority == "speed":
        return c.latency_ms or 0.0
    return 0.0 - score(c)  # not -score(c): a balance of 0 would read "-0.0"


def _excluded(c: Candidate, max_bytes: int | None, max_latency_ms: float | None) -> str:
    if c.problem:
        return f"cannot load: {c.problem}"
    if c.tier == "storage":
        return "is in the storage tier (promote it to ram or swap first)"
    if max_bytes is not None and c.footprint_bytes > max_bytes:
        return (f"needs {format_size(c.footprint_bytes)}, over the limit of "
                f"{format_size(max_bytes)}")
    if max_latency_ms is not None and c.latency_ms is not None and c.latency_ms > max_latency_ms:
        return f"takes {c.latency_ms:g} ms, over the limit of {max_latency_ms:g} ms"
    return ""


def _pinned(pinned: str | None, task: str, candidates: Sequence[Candidate],
            eligible: list[Candidate], out: list[tuple[Candidate, str]],
            notes: list[str]) -> Candidate | None:
    """The pinned model if it may win, else None with a note saying why not."""
    if not pinned:
        return None
    matches = [c for c in candidates if pinned in (c.name, c.key)]
    hit = [c for c in matches if c in eligible]
    if hit:
        return max(hit, key=lambda c: c.version)
    if not matches:
        notes.append(f"pinned model '{pinned}' is not installed; choosing automatically")
    elif not any(task in c.tasks for c in matches):
        notes.append(f"pinned model '{pinned}' cannot do '{task}'; choosing automatically")
    else:
        why = next(w for c, w in out if c in matches)
        notes.append(f"pinned model '{pinned}' {why}; choosing automatically")
    return None


def _primary(priority: str, eligible: Sequence[Candidate]) -> Callable[[Candidate], float]:
    """The priority's criterion, smaller is better."""
    if priority == "quality":
        return lambda c: -c.quality
    if priority == "speed":
        return _latency
    qs = [c.quality for c in eligible]
    ls = [math.log1p(c.latency_ms) for c in eligible if c.latency_ms is not None]
    q_lo, q_span = min(qs), (max(qs) - min(qs)) or 1.0
    l_lo, l_span = (min(ls), (max(ls) - min(ls)) or 1.0) if ls else (0.0, 1.0)

    def balanced(c: Candidate) -> float:
        lat = 1.0 if c.latency_ms is None else (math.log1p(c.latency_ms) - l_lo) / l_span
        return lat - (c.quality - q_lo) / q_span

    return balanced


def _latency(c: Candidate) -> float:
    return math.inf if c.latency_ms is None else c.latency_ms


def _fmt_latency(c: Candidate) -> str:
    return "unknown latency" if c.latency_ms is None else f"{c.latency_ms:g} ms"


def _why_chosen(c: Candidate, task: str, priority: str, pinned: bool) -> list[str]:
    if pinned:
        return [f"{c.key} is pinned for '{task}' and can do it"]
    lead = {"quality": f"highest quality ({c.quality:g})",
            "speed": f"fastest ({_fmt_latency(c)})",
            "balanced": f"best balance of quality ({c.quality:g}) and speed ({_fmt_latency(c)})"}
    return [f"{c.key} can do '{task}'", f"priority {priority}: {lead[priority]}",
            "already loaded" if c.loaded else "fits in memory now" if c.fit == "now"
            else "fits after evicting idle models (none that fits as things are can do it)"
            if c.fit == "evict" else "does not fit in memory now (no model that fits can do it)"]


def _why_lost(c: Candidate, key: tuple[object, ...], best: Candidate,
              best_key: tuple[object, ...], priority: str, pinned: bool) -> str:
    """Why ``c`` (ranked by ``key``) lost to ``best``; keys hold (fits, criterion, ...)."""
    if pinned:
        return f"not pinned: the pinned model {best.key} is used"
    if key[0] != best_key[0]:
        return ("does not fit in memory now" if c.fit == "no"
                else "fits only after evicting idle models")
    k1, b1 = float(key[1]), float(best_key[1])  # type: ignore[arg-type]
    if k1 == b1 or k1 - b1 <= _TIE:  # (inf == inf: two unknown latencies tie)
        if best.loaded and not c.loaded:
            return f"as good as {best.key} for {priority}, but {best.key} is already loaded"
        if priority != "speed" and _latency(c) > _latency(best):
            return f"as good as {best.key} for {priority}, but slower ({_fmt_latency(c)})"
        if priority == "speed" and c.quality < best.quality:
            return f"as fast as {best.key}, but lower quality ({c.quality:g})"
        if priority == "speed" and c.footprint_bytes > best.footprint_bytes:
            return (f"as fast as {best.key} (both {_fmt_latency(c)}), but larger "
                    f"({format_size(c.footprint_bytes)})")
        return f"as good as {best.key} in every way; the tie goes by name and version"
    if priority == "quality":
        return f"lower quality ({c.quality:g} < {best.quality:g})"
    if priority == "speed":
        return f"slower ({_fmt_latency(c)})"
    return f"worse balance of quality and speed ({c.quality:g}, {_fmt_latency(c)})"
