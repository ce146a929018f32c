"""Cache policies: what to evict first and what to preload, learned from the request stream.

:class:`LruPolicy`, :class:`FrequencyPolicy` (LFU) and the predictive :class:`EdgedPolicy` share
one interface (:class:`CachePolicy`), so the daemon and ``tools/replay.py`` run the very same
classes, and :func:`plan_preload` is the preloader's capacity rule for both. Policies are plain
single-threaded objects — the caller serializes ``observe`` and the queries (the daemon wraps one
in a lock) — and deterministic: the same calls give the same answers, ties go by name.

EdgedPolicy's P(model requested within h seconds) is the largest of three estimates, each O(1)
per model (so every call is O(models)):

* **renewal** — the model's own gaps between requests (short gaps in log bins, each bin's gaps
  +-25% around their mean; gaps over ~3 min as one memoryless "between sessions" mean), faded by
  the time that passed (``memory_s``): frequency, recency, periodic models (sharp when due) and
  bursts from one statistic, P(next within h | e s since the last);
* **transitions** — every ``window_s / episodes`` s a request of ``a`` opens an episode of
  ``window_s``; at its end P(b follows a) moves towards whether b came (a running mean at first,
  then ``follow_alpha``), and b's delay is learned. Only pairs at least ``lift`` x b's base rate
  count (a VAD every 2 s predicts nothing), and a b that is late fades (Bayes, exponential delay);
* **time of day** — request rates per hour of *previous* days, halved each day.

Value (what eviction keeps and preloads compete on) is the expected stall a byte saves:
``sum(P(within h) / h for h in 1..1024 s) x (load_s + miss_cost_s) / size`` — the sum is within a
small factor of 1 / (time to next use), ``miss_cost_s`` makes every cold load count, not only
its seconds. ``victim_cost`` (value x bytes) lets the planner prefer a few small, cheap victims to
one big one. Preload candidates are the non-resident models with P(within ``horizon_s``) >=
``preload_threshold``, most stall saved first; the threshold is deliberately low, because
:func:`plan_preload` only lets a preload in where memory is free or held by models worth less
than half of it (tuned on seeded traces, see ``bench/replay_results.md``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from edged.manager import planner
from edged.manager.planner import Resident

_B0, _R, _NB = 0.05, 1.5, 21  # short-gap bins: [0, 0.05), then x1.5 each ...
_SPLIT = _B0 * _R ** (_NB - 1)  # ... up to ~166 s; longer gaps are "between sessions"
_JITTER = 0.25  # a bin's gaps are spread +-25% around their mean
_HORIZONS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)
_MAX_FOLLOWERS = 12
_BASE_ALPHA = 0.01
_DAY = 86400.0


def model_name(key: str) -> str:
    """``"asr:3"`` -> ``"asr"``; a bare name is returned as it is."""
    return key.rpartition(":")[0] or key


class CachePolicy(Protocol):
    def set_model(self, name: str, size_bytes: int, load_s: float) -> None: ...
    def observe(self, model: str, t: float) -> None: ...
    def predict_next(self, now: float, k: int = 5) -> list[tuple[str, float]]: ...
    def value(self, model: str, now: float) -> float: ...
    def eviction_order(self, residents: Sequence[Resident], now: float) -> list[Resident]: ...
    def victim_cost(self, now: float) -> Callable[[Resident], float] | None: ...
    def preload_candidates(self, resident_keys: Collection[str], now: float) -> list[str]: ...


class _Base:
    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.load_s: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def set_model(self, name: str, size_bytes: int, load_s: float) -> None:
        self.sizes[name], self.load_s[name] = max(1, int(size_bytes)), max(0.0, float(load_s))

    def observe(self, model: str, t: float) -> None:
        self.last[model] = t

    def value(self, model: str, now: float) -> float:
        return self.last.get(model, -math.inf)

    def eviction_order(self, residents: Sequence[Resident], now: float) -> list[Resident]:
        return sorted(residents, key=lambda r: (self.value(model_name(r.key), now), r.key))

    def victim_cost(self, now: float) -> Callable[[Resident], float] | None:
        """What losing a resident costs (for the planner), or None: evict in order only."""
        return None

    def preload_candidates(self, resident_keys: Collection[str], now: float) -> list[str]:
        return []


class LruPolicy(_Base):
    """Least recently used first. Predicts nothing, so it never preloads."""

    def predict_next(self, now: float, k: int = 5) -> list[tuple[str, float]]:
        return []


class FrequencyPolicy(_Base):
    """Least frequently used first (all-time counts, recency breaks ties). Never preloads."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def observe(self, model: str, t: float) -> None:
        super().observe(model, t)
        self.counts[model] = self.counts.get(model, 0) + 1

    def value(self, model: str, now: float) -> float:
        return self.counts.get(model, 0) + 1e-12 * max(0.0, self.last.get(model, 0.0))

    def predict_next(self, now: float, k: int = 5) -> list[tuple[str, float]]:
        total = sum(self.counts.values()) or 1
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [(m, c / total) for m, c in ranked]


@dataclass
class _Stats:
    """What EdgedPolicy knows about one model."""

    last: float = -math.inf
    long_n: float = 0.0  # remembered gaps longer than _SPLIT (decayed count) ...
    long_sum: float = 0.0  # ... and their decayed sum, for their mean
    hist: list[float] = field(default_factory=lambda: [0.0] * _NB)  # decayed counts ...
    gaps: list[float] = field(default_factory=lambda: [0.0] * _NB)  # ... and sums, per bin
    knots: list[float] = field(default_factory=list)  # short-gap survival, piecewise linear:
    knot_mass: list[float] = field(default_factory=list)  # its value at each knot
    follow: dict[str, tuple[float, float]] = field(default_factory=dict)  # b -> (P, delay)
    episodes: list[tuple[float, set[str]]] = field(default_factory=list)  # oldest first
    since: set[str] = field(default_factory=set)  # models requested since its last request
    closed: int = 0  # episodes learned from
    today: list[float] = field(default_factory=lambda: [0.0] * 24)
    past: list[float] = field(default_factory=lambda: [0.0] * 24)


class EdgedPolicy(_Base):
    """The predictive policy; the module docstring says what each knob does."""

    def __init__(self, *, window_s: float = 30.0, horizon_s: float = 20.0,
                 preload_threshold: float = 0.05, memory_s: float = 1800.0,
                 follow_alpha: float = 0.2, episodes: int = 3, miss_cost_s: float = 10.0,
                 prior_gap_s: float = 600.0, tail: float = 0.5, lift: float = 2.0,
                 cost_aware: bool = True, tz_offset_s: float = 0.0) -> None:
        super().__init__()
        self.window_s, self.horizon_s = window_s, horizon_s
        self.preload_threshold, self.memory_s = preload_threshold, memory_s
        self.follow_alpha, self.episodes, self.miss_cost_s = follow_alpha, episodes, miss_cost_s
        self.prior_gap_s, self.tail, self.tz_offset_s = prior_gap_s, tail, tz_offset_s
        self.lift, self.cost_aware = lift, cost_aware
        self.stats: dict[str, _Stats] = {}
        self._exposure_today = [0.0] * 24
        self._exposure_past = [0.0] * 24
        self._now = -math.inf
        self._day: int | None = None
        self._ctx: tuple[float, dict[str, tuple[float, float]]] | None = None  # caches for
        self._values: tuple[float, dict[str, float]] = (math.nan, {})  # one instant
        self._base: dict[str, float] = {}  # P(b within window_s of any episode start)
        self._closed = 0

    # -- learning --------------------------------------------------------------------------
    def set_model(self, name: str, size_bytes: int, load_s: float) -> None:
        super().set_model(name, size_bytes, load_s)
        self._values = (math.nan, {})

    def observe(self, model: str, t: float) -> None:
        super().observe(model, t)
        self._ctx, self._values = None, (math.nan, {})
        self._roll_day(t)
        if self._now > -math.inf:
            self._exposure_today[self._hour(t)] += min(max(0.0, t - self._now), 3600.0)
        self._now = max(self._now, t)
        for name, s in self.stats.items():
            while s.episodes and t - s.episodes[0][0] > self.window_s:
                self._close(s, s.episodes.pop(0)[1])
            if name != model:
                s.since.add(model)
                for start, seen in s.episodes:
                    if model not in seen:
                        seen.add(model)
                        self._learn_delay(s, model, t - start)
        s = self.stats.setdefault(model, _Stats())
        s.since = set()
        if not s.episodes or t - s.episodes[-1][0] >= self.window_s / self.episodes:
            s.episodes.append((t, set()))
        if s.last > -math.inf:
            self._learn_gap(s, t - s.last)
        s.last = t
        s.today[self._hour(t)] += 1.0

    def _learn_delay(self, s: _Stats, b: str, delay: float) -> None:
        p, d = s.follow.get(b, (0.0, delay))
        s.follow[b] = (p, d + 0.3 * (delay - d))

    def _close(self, s: _Stats, seen: set[str]) -> None:
        """An episode ended: move P(b follows) towards whether b came during it."""
        # a running mean at first (learn from the first episodes), then forgetting
        s.closed += 1
        self._closed += 1
        a = max(self.follow_alpha, 1.0 / s.closed)
        ab, base = max(_BASE_ALPHA, 1.0 / self._closed), self._base
        for b in set(base) | seen:
            base[b] = (1 - ab) * base.get(b, 0.0) + (ab if b in seen else 0.0)
        for b in set(s.follow) | seen:
            p, d = s.follow.get(b, (0.0, 0.0))
            s.follow[b] = ((1 - a) * p + (a if b in seen else 0.0), d)
        if len(s.follow) > _MAX_FOLLOWERS:
            keep = sorted(s.follow.items(), key=lambda kv: (-kv[1][0], kv[0]))
            s.follow = dict(keep[:_MAX_FOLLOWERS])

    def _learn_gap(self, s: _Stats, gap: float) -> None:
        """Remember ``gap``; older gaps fade with the time that passed (``memory_s``)."""
        fade = math.exp(-gap / self.memory_s)
        s.long_n, s.long_sum = fade * s.long_n, fade * s.long_sum
        s.hist = [fade * w for w in s.hist]
        s.gaps = [fade * g for g in s.gaps]
        if gap >= _SPLIT:
            s.long_n, s.long_sum = s.long_n + 1.0, s.long_sum + gap
        else:
            s.hist[_bin(gap)] += 1.0
            s.gaps[_bin(gap)] += gap
        # each bin's gaps sit +-25% around their mean (not smeared over the bin, so a periodic
        # model is sharp when due): the survival of short gaps is piecewise linear in x
        spans = [(g / w * (1 - _JITTER), g / w * (1 + _JITTER), w)
                 for w, g in zip(s.hist, s.gaps, strict=True) if w > 1e-9]
        s.knots = sorted({x for lo, hi, _ in spans for x in (lo, hi)})
        s.knot_mass = [sum(w * min(1.0, max(0.0, (hi - x) / (hi - lo))) for lo, hi, w in spans)
                       for x in s.knots]

    def _hour(self, t: float) -> int:
        return int((t + self.tz_offset_s) // 3600) % 24

    def _roll_day(self, t: float) -> None:
        day = int((t + self.tz_offset_s) // _DAY)
        if self._day is None or day <= self._day:
            self._day = day if self._day is None else self._day
            return
        self._day = day
        for s in self.stats.values():
            s.past = [0.5 * p + 0.5 * q for p, q in zip(s.past, s.today, strict=True)]
            s.today = [0.0] * 24
        self._exposure_past = [0.5 * p + 0.5 * q for p, q in
                               zip(self._exposure_past, self._exposure_today, strict=True)]
        self._exposure_today = [0.0] * 24

    # -- predicting ------------------------------------------------------------------------
    def _survival(self, s: _Stats, x: float, scale: float) -> float:
        """Remembered gaps longer than x: short gaps (see _learn_gap), then an exponential."""
        if x >= _SPLIT:
            return (s.long_n + self.tail) * math.exp(-(x - _SPLIT) / scale)
        k = bisect.bisect_right(s.knots, x)
        if k == 0:
            short = s.knot_mass[0] if s.knots else 0.0
        elif k == len(s.knots):
            short = 0.0
        else:
            x0, x1 = s.knots[k - 1], s.knots[k]
            m0, m1 = s.knot_mass[k - 1], s.knot_mass[k]
            short = m0 + (m1 - m0) * (x - x0) / (x1 - x0)
        return short + s.long_n + self.tail

    def _renewal(self, s: _Stats, now: float, hs: Sequence[float]) -> list[float]:
        """P(next request within h | none for e seconds), for each h, from the model's gaps.

        Long gaps are modelled as memoryless with their mean (a few samples cannot shape a
        tail), and a model silent for much longer than that fades (the mean stretches to e/3).
        """
        if s.last == -math.inf:
            return [0.0] * len(hs)
        e = max(0.0, now - s.last)
        mean = (s.long_sum + self.tail * self.prior_gap_s) / (s.long_n + self.tail)
        scale = max(mean - _SPLIT, (e - _SPLIT) / 3.0, 1.0)
        alive = self._survival(s, e, scale)
        return [max(0.0, alive - self._survival(s, e + h, scale)) / alive for h in hs]

    def _context(self, now: float) -> dict[str, tuple[float, float]]:
        """b -> (P(b still comes because a came), its mean delay), from the most telling a.

        Only a that were requested within ``window_s`` and after which b has not come yet
        count, and only when P(b | a) is ``lift`` times b's base rate: a VAD running every two
        seconds precedes everything and predicts nothing.
        """
        if self._ctx is not None and self._ctx[0] == now:
            return self._ctx[1]
        ctx: dict[str, tuple[float, float]] = {}
        for s in self.stats.values():
            if now - s.last > self.window_s:
                continue
            x = now - s.last
            for b, (p, delay) in s.follow.items():
                if b in s.since or p < self.lift * self._base.get(b, 0.0):
                    continue
                # b's delay after a taken as exponential: the longer b is late, the less
                # likely it still comes (Bayes: P(comes | not yet after x))
                d = max(delay, 0.05)
                late = p * math.exp(-x / d)
                still = late / (1.0 - p + late) if late > 0 else 0.0
                if still > ctx.get(b, (0.0, 0.0))[0]:
                    ctx[b] = (still, d)
        self._ctx = (now, ctx)
        return ctx

    def soon(self, name: str, now: float, h: float,
             ctx: dict[str, tuple[float, float]] | None = None) -> float:
        """P(``name`` is requested within ``h`` seconds of ``now``)."""
        return self._soon(name, now, (h,), ctx)[0]

    def _soon(self, name: str, now: float, hs: Sequence[float],
              ctx: dict[str, tuple[float, float]] | None) -> list[float]:
        s = self.stats.get(name)
        if s is None:
            return [0.0] * len(hs)
        p_ctx, delay = (self._context(now) if ctx is None else ctx).get(name, (0.0, 1.0))
        hour = self._hour(now)
        exposure, past = self._exposure_past[hour], s.past[hour]
        rate = past / exposure if exposure >= 60.0 else 0.0
        return [max(p, p_ctx * (1.0 - math.exp(-h / delay)), 1.0 - math.exp(-h * rate))
                for p, h in zip(self._renewal(s, now, hs), hs, strict=True)]

    def _value(self, name: str, now: float, ctx: dict[str, tuple[float, float]]) -> float:
        """Expected stall saved per byte kept: ~ (load_s + miss cost) / (size x time to use).

        ``sum(P(within h) / h)`` over geometric horizons is within a small factor of
        1 / (time to next use), and costs a few O(1) lookups instead of a search.
        """
        if self._values[0] != now:
            self._values = (now, {})
        cached = self._values[1].get(name)
        if cached is not None:
            return cached
        soon = self._soon(name, now, _HORIZONS, ctx)
        urgency = sum(p / h for p, h in zip(soon, _HORIZONS, strict=True))
        size = self.sizes.get(name, 1 << 20)
        value = urgency * (self.load_s.get(name, 1.0) + self.miss_cost_s) / size
        self._values[1][name] = value
        return value

    def value(self, model: str, now: float) -> float:
        return self._value(model_name(model), now, self._context(now))

    def eviction_order(self, residents: Sequence[Resident], now: float) -> list[Resident]:
        ctx = self._context(now)
        return sorted(residents,
                      key=lambda r: (self._value(model_name(r.key), now, ctx), r.key))

    def victim_cost(self, now: float) -> Callable[[Resident], float] | None:
        """Expected stall lost by evicting a resident: its value per byte times its bytes."""
        if not self.cost_aware:
            return None
        ctx = self._context(now)
        return lambda r: self._value(model_name(r.key), now, ctx) * r.bytes

    def predict_next(self, now: float, k: int = 5) -> list[tuple[str, float]]:
        ctx = self._context(now)
        scored = [(n, self.soon(n, now, self.horizon_s, ctx)) for n in self.stats]
        scored.sort(key=lambda x: (-x[1], x[0]))
        return [(n, p) for n, p in scored[:k] if p > 0.0]

    def preload_candidates(self, resident_keys: Collection[str], now: float) -> list[str]:
        resident = {model_name(k) for k in resident_keys}
        ctx = self._context(now)
        scored = []
        for n in self.stats:
            if n in resident:
                continue
            p = self.soon(n, now, self.horizon_s, ctx)
            if p >= self.preload_threshold:
                scored.append((-p * (self.load_s.get(n, 1.0) + self.miss_cost_s), n))
        return [n for _, n in sorted(scored)]


def _bin(gap: float) -> int:
    if gap < _B0:
        return 0
    return min(_NB - 1, 1 + int(math.log(gap / _B0) / math.log(_R)))


def make_policy(name: str) -> CachePolicy:
    """The policy the configuration names: ``edged`` | ``lru`` | ``lfu``."""
    makers: dict[str, Callable[[], CachePolicy]] = {
        "edged": EdgedPolicy, "lru": LruPolicy, "lfu": FrequencyPolicy}
    if name not in makers:
        raise ValueError(f"unknown policy {name!r} (expected edged, lru or lfu)")
    return makers[name]()


def plan_preload(policy: CachePolicy, req: planner.LoadRequest,
                 residents: Sequence[Resident], budgets: planner.Budgets,
                 memory: planner.Memory, now: float, margin: float = 1.0) -> planner.Decision:
    """The preloader's capacity rule: fit as things are, or evict only less valuable models.

    First the planner's own preload rule (never evict). If that rejects, the preload may evict
    idle swap models that the policy values *strictly* below the candidate (per byte: their
    expected stall saved is smaller), by a factor ``1 + margin`` so that two models cannot
    preload each other out in turn; a preload never pushes out something that matters as much
    as what it brings. The daemon's preloader and the replay tool both call this.
    """
    first = planner.plan(replace(req, preload=True), residents, budgets, memory,
                         eviction_order=lambda rs: policy.eviction_order(rs, now))
    if not isinstance(first, planner.Reject):
        return first
    bar = policy.value(model_name(req.key), now) / (1.0 + margin)

    def cheaper(rs: Sequence[Resident]) -> list[Resident]:
        return [r for r in policy.eviction_order(rs, now)
                if policy.value(model_name(r.key), now) < bar]

    second = planner.plan(replace(req, preload=False), residents, budgets, memory,
                          eviction_order=cheaper, victim_cost=policy.victim_cost(now))
    return second if isinstance(second, planner.AdmitAfterEvicting) else first
