"""Which variant of a version to serve, and what fits this device (issue 17).

A version may have several variants (its own artifact, named by its precision, plus e.g. an
int8 and an fp16 one made on the device, see ``engines.convert``). ``choose`` is the one rule
that picks among them when a version is loaded; the planner's capacity rules are unchanged,
the variant is one more degree of freedom:

1. a pinned variant (``edgectl variant use``) is always the one;
2. the version itself, when it fits without evicting anything;
3. else the best variant whose quality is within ``max_quality_drop`` of the version's that
   fits without evicting (a smaller variant instead of an eviction, when quality allows);
4. else whatever of those fits after evicting (the version itself first);
5. else the version itself, whose rejection then carries the numbers.

``recommend`` answers "what fits here" for every variant and tier with the same planner, and
the largest batch that fits each tier's budget at the declared warm-up shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edged.manager.memory import planner
from edged.manager.memory.residency import LoadSpec

DEFAULT_MAX_QUALITY_DROP = 0.05
MAX_BATCH = 1024


@dataclass(frozen=True)
class Choice:
    spec: LoadSpec
    reason: str


def _allowed(quality: float, base: float, max_drop: float) -> bool:
    return quality >= base - max_drop - 1e-9


def choose(specs: Mapping[str, LoadSpec], qualities: Mapping[str, float], own: str,
           plan: Callable[[LoadSpec], planner.Decision], pinned: str = "",
           max_quality_drop: float = DEFAULT_MAX_QUALITY_DROP) -> Choice:
    """The variant to load (see the module docstring); ``own`` names the version itself."""
    if pinned:
        return Choice(specs[pinned], f"variant {pinned} is pinned")
    base = qualities[own]
    others = sorted((n for n in specs if n != own and _allowed(qualities[n], base,
                                                               max_quality_drop)),
                    key=lambda n: (-qualities[n], specs[n].bytes))
    decisions = {n: plan(specs[n]) for n in (own, *others)}
    if isinstance(decisions[own], planner.Admit):
        return Choice(specs[own], f"{own} fits now")
    for n in others:
        if isinstance(decisions[n], planner.Admit):
            return Choice(specs[n], f"{own} does not fit without evicting; {n} (quality "
                                    f"{qualities[n]:g} vs {base:g}) fits now")
    for n in (own, *others):
        d = decisions[n]
        if isinstance(d, planner.AdmitAfterEvicting):
            return Choice(specs[n], f"{n} fits after evicting {', '.join(d.victims)}")
    return Choice(specs[own], f"no variant fits: {own} is refused with its numbers")


@dataclass(frozen=True)
class Fit:
    variant: str
    tier: str
    decision: str  # "admit" | "admit_after_evicting" | "reject" | "never"
    evict: tuple[str, ...]
    estimated_bytes: int
    measured_bytes: int | None
    load_seconds: float | None
    quality: float
    max_batch: int | None  # the largest batch within the tier's budget (None: not batched)
    reason: str
    latency_ms: float | None = None  # measured on real requests to this variant, if any


@dataclass(frozen=True)
class Recommendation:
    name: str
    fits: tuple[Fit, ...]
    choice: Fit | None
    reason: str


def fit_of(decision: planner.Decision, tier_budget: int,
           needed: int) -> tuple[str, tuple[str, ...], str]:
    if needed > tier_budget:
        return "never", (), "larger than the tier's whole budget on this device"
    if isinstance(decision, planner.Admit):
        return "admit", (), "fits now"
    if isinstance(decision, planner.AdmitAfterEvicting):
        return "admit_after_evicting", tuple(decision.victims), \
            f"fits after evicting {', '.join(decision.victims)}"
    return "reject", (), decision.reason


# The estimate holds within +-15% of a real load (bench, tests) but errs low as the batch grows
# (ppocr-det at 640: -8% at batch 1, -14.5% at batch 5): a batch is recommended only when its
# estimate with this margin fits, so that the real load fits too.
BATCH_MARGIN = 0.15


def max_batch(estimate_at: Callable[[Mapping[str, Sequence[int]]], int],
              shapes: Mapping[str, Sequence[int]], budget: int,
              margin: float = BATCH_MARGIN) -> int | None:
    """The largest batch (first dimension of every warm-up shape) whose estimate, with
    ``margin``, fits ``budget``: 0 when not even batch 1 does, None when there are no shapes
    to batch."""
    if not shapes or not all(len(s) for s in shapes.values()):
        return None

    def at(b: int) -> int:
        return int(estimate_at({k: (b, *list(s)[1:]) for k, s in shapes.items()})
                   * (1 + margin))

    if at(1) > budget:
        return 0
    lo, hi = 1, 2
    while hi <= MAX_BATCH and at(hi) <= budget:
        lo, hi = hi, hi * 2
    if hi > MAX_BATCH:
        return MAX_BATCH
    while hi - lo > 1:  # at(lo) fits, at(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if at(mid) <= budget else (lo, mid)
    return lo


def pick(fits: Sequence[Fit], own: str, max_quality_drop: float,
         tier: str = "swap") -> tuple[Fit | None, str]:
    """One recommended (variant, tier), by the rule ``choose`` serves with: the model's own
    ``tier`` before the other one (then swap before ram: ram pins memory for good); there,
    the version itself where it fits now, else a variant within the quality drop that fits
    now, else what fits after evicting."""
    order = {tier: -1, "swap": 0, "ram": 1}
    base = next((f.quality for f in fits if f.variant == own), 0.0)
    ok = [f for f in fits if f.variant == own or _allowed(f.quality, base, max_quality_drop)]
    for wanted in ("admit", "admit_after_evicting"):
        cands = [f for f in ok if f.decision == wanted]
        if cands:
            best = min(cands, key=lambda f: (order.get(f.tier, 2), f.variant != own,
                                             -f.quality, f.measured_bytes or f.estimated_bytes))
            why = (f"{best.variant} in {best.tier}: {best.reason}"
                   + ("" if best.variant == own else
                      f" ({own} does not fit as well; quality {best.quality:g} vs {base:g})"))
            return best, why
    return None, "no variant fits any tier of this device now"
