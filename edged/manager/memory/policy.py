"""Cache policies: what to evict first and what to preload, learned from the request stream.

:class:`LruPolicy`, :class:`FrequencyPolicy` (LFU) and the predictive :class:`EdgedPolicy` share
one interface (:class:`CachePolicy`); the capacity decisions built on it (a demand load's
victims, the preloader's rule) live beside the planner, in ``edged.manager.memory.capacity``, so
the daemon and ``tools/replay.py`` run the very same code. Policies are plain single-threaded
objects — the caller serializes ``observe`` and the queries (the daemon wraps one in a lock) — and
deterministic: the same calls give the same answers, ties go by name.

EdgedPolicy's P(model requested within h seconds) is the largest of three estimates, each O(1)
per model (so every call is O(models)):

* **renewal** — the model's own gaps between requests (short gaps in log bins, each bin's gaps
  +-25% around their mean; gaps over ~3 min as one memoryless "between sessions" mean), faded by
  the time that passed (``memory_s``): frequency, recency, periodic models (sharp when due) and
  bursts from one statistic, P(next within h | e s since the last). A model with few gaps
  leans on a prior of ``tail`` pseudo-gaps, and that prior is learned from the other
  models (``pool_fade``): it is spread like the *first* gaps of the models seen so far (a
  model's first request to its second, a model silent for ~3 min after its first request
  counting as a long one). On a robot whose new models come back within seconds (a
  conversation's turns) a model seen once is expected back as soon; where new models
  are one-offs (a scan) it is not;
* **transitions** — a request of ``a`` after ``onset_s`` of silence (an *onset*: a conversation's
  next turn, not a patrol's thousandth detection) opens an episode of ``window_s``; when it ends,
  P(b follows a) moves towards whether b came (a running mean at first, then ``follow_alpha``),
  and b's delay is learned as a mean and a spread. P is shrunk towards b's base rate by
  ``prior_n`` episodes, only pairs at least ``lift`` x that base rate count (a VAD every 2 s
  predicts nothing), and a b that is late fades (Bayes, the delay taken as normal: a b due 3 s
  after a is not written off after 1 s);
* **time of day** — onsets per hour of *previous* days, halved each day: how often sessions of
  the model start at this hour (a Poisson rate), so the night's models are expected at night.

Decisions (tuned on seeded traces, see ``bench/replay_results.md``):

* **value** (eviction order, demand victims) is the expected stall a byte saves:
  ``sum(P(within h) / h for h in 1..1024 s) x (load_s + miss_cost_s) / size`` — the sum is
  within a small factor of 1 / (time to next use), and ``miss_cost_s`` makes every cold load
  count, not only its seconds; ``victim_cost`` (value x bytes) lets the planner prefer a few
  small victims to one big one. A model seen ``n`` times counts ``n / (n + probation)`` of
  that (scan resistance: a one-off model is the first to go, not the hot model LRU would pick).
* **bursts**: a cold load of a model whose sessions bring many requests at once (a detector
  hammered at 10 Hz) is felt by every request that queues behind it — and at tight budgets
  the loader is often busy with the 1.5 GiB LLM, so they queue for seconds. Each model learns
  the requests within ``burst_s`` of a session's start (a running mean), and its miss costs
  ``burst_weight`` s more per request past ``burst_min``: the bursting model is kept beside
  the large one, as LFU keeps it, while streams at 1-2 Hz and one-shot models are unchanged.
* **experts under pressure** (LeCaR's regret, deterministic): that *predict* value, *recency*
  (LRU, per byte) and *frequency* (faded counts, per byte) each run a shadow cache of the
  budget (``set_capacity``) on the same requests; a request an expert's shadow misses while
  another's holds it is that expert's regret (discounted by ``regret_decay``), and the value
  used is the experts' weighted geometric mean with weights ``exp(-regret_rate x regret)``
  (at least 1% each): the trace decides how much recency and frequency count.
* **preloads**: candidates are the non-resident models with P(within ``horizon_s``, or
  ``horizon_loads`` of their own load times if longer: a slow load must land with time to
  spare) >= ``preload_threshold``, by :meth:`EdgedPolicy.preload_gain`: the cold load and
  stall saved if the request comes after the load is done, plus, for a request at ``s``
  while it loads, the ``s`` seconds it waits less (a *partial* preload: half a load is half a
  stall), integrated over the predicted arrival — so a load that cannot finish before its
  request still starts when the wait it saves beats what its victims are expected to cost.
  ``capacity.plan_preload`` lets one in where memory is free, or where the victims' expected loss —
  P(victim needed again before the candidate, within ``keep_s`` or ``keep_loads`` of its own
  load times if longer: on a slow disk a reload outlasts a fixed horizon) x its (load_s + miss
  cost), Belady's rule in expectation — is below the gain / (1 + margin), and where no victim's
  keeping is worth half what keeping the candidate would be or more (value per byte x bytes:
  ``admit``, not one prediction against another almost as strong, which wasted most preloads
  where the predictions went stale; whole models, so that the large LLM, cheapest per byte,
  is not the one victim left to every preload). That P is
  *predict*'s, blended with the recency and frequency experts' estimates by how much their
  regret weight exceeds predict's, times ``young_n / (young_n + the victim's requests)`` (the
  less predict has seen of a model, the more the others count): where the trace has shown
  that recency predicts better, a model just used is not pushed out for a preload because its
  one or two gaps say it is done (a new phase, a short trace).
* **a busy loader**: demand loads never wait behind a preload (they cancel it), so a preload
  saves only if it finishes first. Candidates are ranked, and their gain priced for evictions,
  by gain x P(no model that is not resident is requested within the candidate's load time)
  (:meth:`EdgedPolicy.completes`): when demand loads keep coming, the loader's gaps go to the
  short loads that will land, not to a long one a demand load will cancel.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edged.manager.memory.planner import Resident

_B0, _R, _NB = 0.05, 1.5, 21  # short-gap bins: [0, 0.05), then x1.5 each ...
_SPLIT = _B0 * _R ** (_NB - 1)  # ... up to ~166 s; longer gaps are "between sessions"
_JITTER = 0.25  # a bin's gaps are spread +-25% around their mean
_HORIZONS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)  # for value
_GRID = (1.0, 3.0, 8.0, 20.0, 50.0)  # for eviction losses, up to keep_s (or longer: _grid_to)
_MAX_FOLLOWERS = 12
_BASE_ALPHA = 0.01
_DAY = 86400.0
_SQRT2 = math.sqrt(2.0)
EXPERTS = ("predict", "recency", "frequency")
_PARTIAL = (1 / 64, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)  # of a load: the partial grid


def _grid_to(h: float) -> tuple[float, ...]:
    """The horizons an eviction loss is integrated over, up to ``h``."""
    return (*(g for g in _GRID if g < h), h)


def model_name(key: str) -> str:
    """``"asr:3"`` -> ``"asr"``; a bare name is returned as it is."""
    return key.rpartition(":")[0] or key


class CachePolicy(Protocol):
    last: dict[str, float]  # model -> when it was last requested

    def set_model(self, name: str, size_bytes: int, load_s: float) -> None: ...
    def set_capacity(self, capacity_bytes: int | None) -> None: ...
    def observe(self, model: str, t: float) -> None: ...
    def predict_next(self, now: float, k: int = 5) -> list[tuple[str, float]]: ...
    def value(self, model: str, now: float) -> float: ...
    def eviction_order(self, residents: Sequence[Resident], now: float) -> list[Resident]: ...
    def victim_cost(self, now: float) -> Callable[[Resident], float] | None: ...
    def preload_candidates(self, resident_keys: Collection[str], now: float) -> list[str]: ...
    def preload_gain(self, name: str, now: float) -> float: ...
    def eviction_loss(self, name: str, now: float,
                      at_least: float = math.inf) -> Callable[[Resident], float]: ...


class _Base:
    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.load_s: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.capacity: int | None = None

    def set_model(self, name: str, size_bytes: int, load_s: float) -> None:
        self.sizes[name], self.load_s[name] = max(1, int(size_bytes)), max(0.0, float(load_s))

    def set_capacity(self, capacity_bytes: int | None) -> None:
        """The memory the cached models share (the swap budget); None: unknown."""
        self.capacity = None if capacity_bytes is None else max(1, int(capacity_bytes))

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

    def preload_gain(self, name: str, now: float) -> float:
        return 0.0

    def eviction_loss(self, name: str, now: float,
                      at_least: float = math.inf) -> Callable[[Resident], float]:
        """A policy that predicts nothing cannot tell a victim is safe to lose."""
        return lambda r: math.inf


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
    onset: float = -math.inf  # the last request after a silence of onset_s
    long_n: float = 0.0  # remembered gaps longer than _SPLIT (decayed count) ...
    long_sum: float = 0.0  # ... and their decayed sum, for their mean
    hist: list[float] = field(default_factory=lambda: [0.0] * _NB)  # decayed counts ...
    gaps: list[float] = field(default_factory=lambda: [0.0] * _NB)  # ... and sums, per bin
    knots: list[float] = field(default_factory=list)  # short-gap survival, piecewise linear:
    knot_mass: list[float] = field(default_factory=list)  # its value at each knot
    # b -> (P(b within window_s of an onset), b's mean delay, the delay's variance)
    follow: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    episodes: list[tuple[float, set[str]]] = field(default_factory=list)  # oldest first
    since: set[str] = field(default_factory=set)  # models requested since its last onset
    closed: int = 0  # episodes learned from
    today: list[float] = field(default_factory=lambda: [0.0] * 24)  # onsets per hour
    burst_n: float = 1.0  # requests within burst_s of an onset (a running mean) ...
    burst_cur: int = 0  # ... and the current onset's so far
    bursts: int = 0  # onsets learned from
    past: list[float] = field(default_factory=lambda: [0.0] * 24)
    censored: bool = False  # silent past _SPLIT after its first request: in the pool as long


class EdgedPolicy(_Base):
    """The predictive policy; the module docstring says what each knob does."""

    def __init__(self, *, window_s: float = 30.0, horizon_s: float = 40.0,
                 horizon_loads: float = 3.0,
                 preload_threshold: float = 0.05, memory_s: float = 1800.0,
                 follow_alpha: float = 0.2, onset_s: float = 5.0, prior_n: float = 1.0,
                 miss_cost_s: float = 40.0, keep_s: float = 90.0, keep_loads: float = 5.0,
                 prior_gap_s: float = 600.0,
                 tail: float = 0.5, lift: float = 2.0, cost_aware: bool = True,
                 tz_offset_s: float = 0.0, tod_weight: float = 0.5,
                 tod_min_s: float = 600.0, probation: float = 1.0,
                 experts: Sequence[str] = EXPERTS, regret_rate: float = 0.5,
                 regret_decay: float = 0.98, preload_credit: float = 0.5,
                 young_n: float = 5.0, burst_s: float = 8.0,
                 burst_weight: float = 8.0, burst_min: float = 10.0,
                 pool_fade: float = 0.2) -> None:
        super().__init__()
        # the models' first gaps (see _pool_add); one pseudo-gap "between sessions" to start
        self.pool_fade = pool_fade
        self._pool = _Stats(long_n=1.0, long_sum=prior_gap_s)
        self._pool_total = 1.0
        self.window_s, self.horizon_s, self.horizon_loads = window_s, horizon_s, horizon_loads
        self.preload_threshold, self.memory_s = preload_threshold, memory_s
        self.follow_alpha, self.onset_s, self.prior_n = follow_alpha, onset_s, prior_n
        self.miss_cost_s, self.keep_s, self.keep_loads = miss_cost_s, keep_s, keep_loads
        self.prior_gap_s, self.tail, self.tz_offset_s = prior_gap_s, tail, tz_offset_s
        self.lift, self.cost_aware = lift, cost_aware
        self.tod_weight, self.tod_min_s = tod_weight, tod_min_s
        self._grid_hs = _grid_to(keep_s)
        self.stats: dict[str, _Stats] = {}
        self._exposure_today = [0.0] * 24
        self._exposure_past = [0.0] * 24
        self._now = -math.inf
        self._day: int | None = None
        self._ctx: tuple[float, _Context] | None = None  # caches for one instant
        self._values: tuple[float, dict[str, float]] = (math.nan, {})
        self._grid: tuple[float, dict[tuple[str, int, float], list[float]]] = (math.nan, {})
        self._base: dict[str, float] = {}  # P(b within window_s of any onset)
        self._closed = 0
        self.probation = probation
        unknown = set(experts) - set(EXPERTS)
        if not experts or unknown:
            raise ValueError(f"experts must be some of {EXPERTS}, not {list(experts)}")
        self.experts = tuple(experts)
        self.regret_rate, self.regret_decay = regret_rate, regret_decay
        self.preload_credit = preload_credit
        self.young_n = young_n
        self.burst_s, self.burst_weight = burst_s, burst_weight
        self.burst_min = burst_min
        self.regret = dict.fromkeys(self.experts, 0.0)  # discounted misses each expert caused
        self._shadow: dict[str, set[str]] = {e: set() for e in self.experts}  # their caches
        self.counts: dict[str, int] = {}
        self._freq: dict[str, tuple[float, float]] = {}  # decayed request count, as of when
        self._blend: tuple[float, dict[str, float]] = (math.nan, {})
        self._weights: dict[str, float] = {}  # weights() as of _blend's instant
        self._resident: frozenset[str] | None = None  # as the last preload pass saw it
        self._demand: tuple[float, dict[str, list[float]]] = (math.nan, {})

    # -- learning --------------------------------------------------------------------------
    def set_model(self, name: str, size_bytes: int, load_s: float) -> None:
        super().set_model(name, size_bytes, load_s)
        self._values, self._grid = (math.nan, {}), (math.nan, {})
        self._blend, self._demand = (math.nan, {}), (math.nan, {})

    def set_capacity(self, capacity_bytes: int | None) -> None:
        super().set_capacity(capacity_bytes)
        self._blend = (math.nan, {})

    # -- experts and their regret (LeCaR's idea, deterministic) ------------------------------
    def weights(self) -> dict[str, float]:
        """Each expert's weight: exp(-regret_rate x its discounted misses), normalized, with a
        floor of 1% (an expert out of favour can come back when the trace changes)."""
        low = min(self.regret.values())
        raw = {e: math.exp(-self.regret_rate * (r - low)) for e, r in self.regret.items()}
        total = sum(raw.values())
        w = {e: max(0.01, x / total) for e, x in raw.items()}
        total = sum(w.values())
        return {e: x / total for e, x in w.items()}

    def expert_values(self, now: float, names: Collection[str] | None = None
                      ) -> dict[str, dict[str, float]]:
        """Every known model's value per byte (stall saved per byte kept) by each expert:
        ``predict`` (the renewal, transition and time-of-day estimates, see ``_value``),
        ``recency`` (1 / time since its last request: LRU) and ``frequency`` (requests,
        faded over ``memory_s``: LFU that forgets), each x (load_s + miss cost) / size."""
        ctx = self._context(now)
        out: dict[str, dict[str, float]] = {e: {} for e in self.experts}
        for name in self.stats if names is None else names:
            st = self.stats.get(name)
            if st is None:
                continue
            for e, v in zip(self.experts, self._expert_values(name, st, now, ctx),
                            strict=True):
                out[e][name] = v
        return out

    def _expert_values(self, name: str, st: _Stats, now: float, ctx: _Context) -> list[float]:
        """One model's value per byte by each expert, in ``self.experts``' order."""
        per_byte = self._miss(name, st) / self.sizes.get(name, 1 << 20)
        out = []
        for e in self.experts:
            if e == "predict":
                out.append(self._value(name, now, ctx))
            elif e == "recency":
                out.append(per_byte / (max(0.0, now - st.last) + 1.0))
            else:
                f, since = self._freq.get(name, (0.0, now))
                out.append(per_byte * f * math.exp(-max(0.0, now - since) / self.memory_s))
        return out

    def _learn_regret(self, model: str, t: float) -> None:
        """Each expert runs a shadow cache of the capacity on the same requests (evicting by
        its own values, lowest per byte first); a request its shadow misses is its regret,
        discounted by ``regret_decay`` per miss of any shadow. What LeCaR learns from its
        evictions' history, without randomness: the same calls give the same weights."""
        cap = self.capacity if self.capacity is not None else sum(self.sizes.values()) // 2
        size = self.sizes.get(model, 1 << 20)
        missed = [e for e in self.experts if model not in self._shadow[e]]
        if not missed or size > cap:
            return
        # the predict expert also preloads: a miss it saw coming (likely within a load's time
        # from now, as the preloader asks) is not held against it
        credited = "predict" in missed and self.preload_credit > 0 and self.soon(
            model, t, self.horizon_s) >= self.preload_credit
        values = self.expert_values(t, (*set().union(*(self._shadow[e] for e in missed)),))
        for e in missed:
            shadow, vals = self._shadow[e], values[e]
            used = sum(self.sizes.get(n, 1 << 20) for n in shadow)
            for victim in sorted(shadow, key=lambda n: (vals.get(n, 0.0), n)):
                if used + size <= cap:
                    break
                shadow.discard(victim)
                used -= self.sizes.get(victim, 1 << 20)
            shadow.add(model)
        regrets = [e for e in missed if not (credited and e == "predict")]
        if len(regrets) < len(self.experts):  # some shadow kept it: the others learn
            for e in self.regret:
                self.regret[e] = self.regret_decay * self.regret[e] + float(e in regrets)

    def observe(self, model: str, t: float) -> None:
        if len(self.experts) > 1:
            self._learn_regret(model, t)
        super().observe(model, t)
        self.counts[model] = self.counts.get(model, 0) + 1
        f, since = self._freq.get(model, (0.0, t))
        self._freq[model] = (f * math.exp(-(t - since) / self.memory_s) + 1.0, t)
        self._ctx, self._values, self._grid = None, (math.nan, {}), (math.nan, {})
        self._blend, self._demand = (math.nan, {}), (math.nan, {})
        self._roll_day(t)
        if self._now > -math.inf:
            self._expose(self._now, t)
        self._now = max(self._now, t)
        for name, other in self.stats.items():
            while other.episodes and t - other.episodes[0][0] > self.window_s:
                self._close(other, other.episodes.pop(0)[1])
            if (self.pool_fade > 0 and not other.censored and other.last > -math.inf
                    and self.counts.get(name, 0) == 1 and t - other.last > _SPLIT):
                other.censored = True
                self._pool_add(t - other.last)
            if name != model:
                other.since.add(model)
                for start, seen in other.episodes:
                    if model not in seen:
                        seen.add(model)
                        self._learn_delay(other, model, t - start)
        s = self.stats.setdefault(model, _Stats())
        if t - s.last >= self.onset_s:
            if s.burst_cur:
                s.bursts += 1
                a = max(self.follow_alpha, 1.0 / s.bursts)
                s.burst_n = (1.0 - a) * s.burst_n + a * s.burst_cur
            s.onset, s.since, s.burst_cur = t, set(), 0
            s.episodes.append((t, set()))
        if t - s.onset <= self.burst_s:
            s.burst_cur += 1
        if t - s.last >= _SPLIT:  # a session starts: what the time of day counts
            s.today[self._hour(t)] += 1.0
        if s.last > -math.inf:
            self._learn_gap(s, t - s.last)
            if self.pool_fade > 0 and self.counts[model] == 2 and not s.censored:
                self._pool_add(t - s.last)
        s.last = t

    def _pool_add(self, gap: float) -> None:
        """One model's first gap (the time from its first request to its second; a model
        silent for ``_SPLIT`` after its first request counts as a long gap then, once) into
        the population of first gaps, older ones fading by ``pool_fade`` per model."""
        pool = self._pool
        self._learn_gap(pool, gap, 1.0 - self.pool_fade)
        self._pool_total = pool.long_n + sum(pool.hist)

    def _pool_surv(self, x: float) -> float:
        """The share of the models' first gaps longer than ``x`` (1 with the pool off)."""
        if self.pool_fade <= 0:
            return 1.0
        pool = self._pool
        if x >= _SPLIT or not pool.knots:
            short = 0.0
        else:
            k = bisect.bisect_right(pool.knots, x)
            if k == 0:
                short = pool.knot_mass[0]
            elif k == len(pool.knots):
                short = 0.0
            else:
                x0, x1 = pool.knots[k - 1], pool.knots[k]
                m0, m1 = pool.knot_mass[k - 1], pool.knot_mass[k]
                short = m0 + (m1 - m0) * (x - x0) / (x1 - x0)
        return (short + pool.long_n) / self._pool_total

    def _miss(self, name: str, st: _Stats | None) -> float:
        """What a cold load of ``name`` costs: its load time, the miss cost, and
        ``burst_weight`` s for each further request a session of it brings within ``burst_s``
        of its start (they queue behind the load: a streaming or bursting model's miss is felt
        many times)."""
        return (self.load_s.get(name, 1.0) + self.miss_cost_s
                + (self.burst_weight * max(0.0, st.burst_n - self.burst_min)
                   if st is not None else 0.0))

    def _learn_delay(self, s: _Stats, b: str, delay: float) -> None:
        p, d, var = s.follow.get(b, (0.0, delay, (0.5 * delay) ** 2))
        err = delay - d
        s.follow[b] = (p, d + 0.3 * err, var + 0.3 * (err * err - var))

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
            p, d, var = s.follow.get(b, (0.0, 0.0, 0.0))
            s.follow[b] = ((1 - a) * p + (a if b in seen else 0.0), d, var)
        if len(s.follow) > _MAX_FOLLOWERS:
            keep = sorted(s.follow.items(), key=lambda kv: (-kv[1][0], kv[0]))
            s.follow = dict(keep[:_MAX_FOLLOWERS])

    def _learn_gap(self, s: _Stats, gap: float, fade: float | None = None) -> None:
        """Remember ``gap``; older gaps fade with the time that passed (``memory_s``)."""
        if fade is None:
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
        # swept from the right: at each knot the slope changes by the spans starting there
        bends: dict[float, float] = {}
        for w, g in zip(s.hist, s.gaps, strict=True):
            if w > 1e-9 and g > 1e-9:  # (gaps of 0: requests observed at one instant)
                lo, hi = g / w * (1 - _JITTER), g / w * (1 + _JITTER)
                bends[hi] = bends.get(hi, 0.0) + w / (hi - lo)
                bends[lo] = bends.get(lo, 0.0) - w / (hi - lo)
        s.knots = sorted(bends)
        mass, slope, prev = [0.0] * len(s.knots), 0.0, 0.0
        for j in range(len(s.knots) - 1, -1, -1):
            x = s.knots[j]
            if j < len(s.knots) - 1:
                prev += slope * (s.knots[j + 1] - x)
            mass[j] = max(0.0, prev)
            slope += bends[x]
        s.knot_mass = mass

    def _expose(self, start: float, end: float) -> None:
        """Seconds observed, into their hours of day (a gap counts an hour at most: the robot
        may have been switched off)."""
        start = max(start, end - 3600.0)
        while start < end:
            upto = min(end, (math.floor((start + self.tz_offset_s) / 3600.0) + 1) * 3600.0
                       - self.tz_offset_s)
            self._exposure_today[self._hour(start)] += upto - start
            start = upto

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
            return (s.long_n + self.tail * self._pool_surv(x)) * math.exp(-(x - _SPLIT) / scale)
        k = bisect.bisect_right(s.knots, x)
        if k == 0:
            short = s.knot_mass[0] if s.knots else 0.0
        elif k == len(s.knots):
            short = 0.0
        else:
            x0, x1 = s.knots[k - 1], s.knots[k]
            m0, m1 = s.knot_mass[k - 1], s.knot_mass[k]
            short = m0 + (m1 - m0) * (x - x0) / (x1 - x0)
        return short + s.long_n + self.tail * self._pool_surv(x)

    def _context(self, now: float) -> _Context:
        """b -> (P(b still comes because a came), b's delay mean and sd, time since a's onset),
        from the most telling a (see :class:`_Context`), remembered for one instant."""
        if self._ctx is not None and self._ctx[0] == now:
            return self._ctx[1]
        ctx = _Context(self, now)
        self._ctx = (now, ctx)
        return ctx

    def soon(self, name: str, now: float, h: float, ctx: _Context | None = None) -> float:
        """P(``name`` is requested within ``h`` seconds of ``now``)."""
        return self._soon(name, now, (h,), ctx)[0]

    def _soon(self, name: str, now: float, hs: Sequence[float],
              ctx: _Context | None) -> list[float]:
        """P(``name`` within h) for each h of ``hs`` (ascending): the largest estimate."""
        s = self.stats.get(name)
        if s is None or s.last == -math.inf:
            return [0.0] * len(hs)
        # renewal: P(next within h | none for e s); long gaps memoryless with their mean, and
        # a model silent for much longer than that fades (the mean stretches to e/3)
        e = max(0.0, now - s.last)
        mean = (s.long_sum + self.tail * self.prior_gap_s) / (s.long_n + self.tail)
        scale = max(mean - _SPLIT, (e - _SPLIT) / 3.0, 1.0)
        hour = self._hour(now)
        exposure = self._exposure_past[hour]
        if exposure >= self.tod_min_s:  # sessions start at this hour's rate of previous days
            rate = s.past[hour] / exposure
            scale = 1.0 / ((1.0 - self.tod_weight) / scale + self.tod_weight * rate + 1e-9)
        alive = self._survival(s, e, scale)
        entry = (self._context(now) if ctx is None else ctx).get(name)
        if entry is not None:
            still, d, sd, x = entry
            f0 = _phi((x - d) / sd)
            rest = max(1e-12, 1.0 - f0)
        out, top = [], 0.0
        long_only = e >= _SPLIT  # then the renewal is one exponential: no knots to look up
        for h in hs:
            if long_only:
                p = 1.0 - math.exp(-h / scale)
            else:
                p = (alive - self._survival(s, e + h, scale)) / alive
            if entry is not None:
                q = still * (_phi((x + h - d) / sd) - f0) / rest
                if q > p:
                    p = q if q < 1.0 else 1.0
            if p > top:
                top = p
            out.append(top)
        return out

    def _value(self, name: str, now: float, ctx: _Context) -> float:
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
        n = self.counts.get(name, 0)
        if self.probation > 0:  # scan resistance: a model seen once is on probation
            urgency *= n / (n + self.probation)
        value = urgency * self._miss(name, self.stats.get(name)) / size
        self._values[1][name] = value
        return value

    def value(self, model: str, now: float) -> float:
        """What keeping a byte of ``model`` is worth: the experts' values per byte, blended
        as a weighted geometric mean (each expert's scale cancels out of every comparison,
        and with all the weight on one expert it is that expert's value)."""
        name = model_name(model)
        if len(self.experts) == 1 and self.experts[0] == "predict":
            return self._value(name, now, self._context(now))
        if self._blend[0] != now:  # worked out per model when asked: a capacity check
            self._blend = (now, {})  # prices its residents, not every model ever seen
            self._weights = self.weights()
        blend = self._blend[1]
        got = blend.get(name)
        if got is None:
            st = self.stats.get(name)
            if st is None:
                return 0.0  # a model never requested: worth nothing yet
            x, weights = 0.0, self._weights
            for e, v in zip(self.experts, self._expert_values(name, st, now, self._context(now)),
                            strict=True):
                x = x + weights[e] * math.log(max(v, 1e-300))
            got = blend[name] = math.exp(x)
        return got

    def eviction_order(self, residents: Sequence[Resident], now: float) -> list[Resident]:
        return sorted(residents, key=lambda r: (self.value(r.key, now), r.key))

    def victim_cost(self, now: float) -> Callable[[Resident], float] | None:
        """Expected stall lost by evicting a resident: its value per byte times its bytes."""
        if not self.cost_aware:
            return None
        memo: dict[tuple[str, int], float] = {}  # the planner asks for each resident often

        def cost(r: Resident) -> float:
            got = memo.get((r.key, r.bytes))
            if got is None:
                got = memo[(r.key, r.bytes)] = self.value(r.key, now) * r.bytes
            return got
        return cost

    def predict_next(self, now: float, k: int = 5) -> list[tuple[str, float]]:
        ctx = self._context(now)
        scored = [(n, self.soon(n, now, self.horizon_s, ctx)) for n in self.stats]
        scored.sort(key=lambda x: (-x[1], x[0]))
        return [(n, p) for n, p in scored[:k] if p > 0.0]

    def preload_gain(self, name: str, now: float) -> float:
        """Expected stall (miss cost included) that preloading ``name`` now saves: a request
        after the load is done saves the cold load, one during it half the load time — times
        the chance that no demand load cancels it first (:meth:`completes`)."""
        ctx = self._context(now)
        return self._gain(name, now, ctx)[0] * self.completes(name, now)

    def completes(self, name: str, now: float) -> float:
        """P(a preload of ``name`` started now finishes before a demand load needs the
        loader): demand loads never wait behind a preload, they cancel it, and a cancelled
        preload saves nothing. A demand load comes when a model that is not resident (as the
        last :meth:`preload_candidates` pass was told; 1 before any pass) is requested: the
        product over them of P(not requested within ``name``'s load time). So on a busy
        loader a long load is worth less than a short one of the same gain, and on a quiet
        one little changes. Each model's P on a fixed grid of horizons (interpolated) is
        remembered for one instant, as the eviction losses use it."""
        if self._resident is None:
            return 1.0
        if self._demand[0] != now:
            ctx = self._context(now)
            self._demand = (now, {n: self._cached((n, 1, self.keep_s), now, self._grid_hs, ctx)
                                  for n in self.stats if n not in self._resident})
        hs, load = self._grid_hs, self.load_s.get(name, 1.0)
        k = bisect.bisect_left(hs, load)
        out = 1.0
        for n, fs in self._demand[1].items():
            if n == name:
                continue
            if k == 0:
                f = fs[0] * load / hs[0]
            elif k == len(hs):
                f = fs[-1]
            else:
                f = fs[k - 1] + (fs[k] - fs[k - 1]) * (load - hs[k - 1]) / (hs[k] - hs[k - 1])
            out *= max(0.0, 1.0 - f)
        return out

    def _gain(self, name: str, now: float, ctx: _Context) -> tuple[float, float]:
        """(preload_gain, P(within its horizon)), remembered for one instant. The horizon is
        ``horizon_s``, or ``horizon_loads`` x ``name``'s load time if that is longer: a load
        that takes most of ``horizon_s`` (on a slow disk the 380 MB segment model takes 23 s,
        the LLM 90 s) could save a request only in the seconds left after it lands, so in
        fixed seconds a slow model was almost never worth preloading, and its requests waited
        its whole load."""
        load = self.load_s.get(name, 1.0)
        horizon = max(self.horizon_s, self.horizon_loads * load)
        ld = min(load, horizon)
        hs = [f * ld for f in _PARTIAL] + [horizon]
        fs = self._cached((name, 2, horizon), now, hs, ctx)
        p_load, p_h = fs[-2], fs[-1]
        # a request at s < ld waits ld - s instead of load: it saves s (half a load is half a
        # stall): E[s; s < ld] = ld F(ld) - integral of F over [0, ld] (trapezoids on a grid
        # finer near 0, where a follower due soon puts its mass)
        area, prev_h, prev_f = 0.0, 0.0, 0.0
        for h, f in zip(hs[:-1], fs[:-1], strict=True):
            area += (h - prev_h) * 0.5 * (f + prev_f)
            prev_h, prev_f = h, f
        partial = max(0.0, ld * p_load - area)
        return (self.miss_cost_s + load) * max(0.0, p_h - p_load) + partial, p_h

    def _cached(self, key: tuple[str, int, float], now: float, hs: Sequence[float],
                ctx: _Context) -> list[float]:
        """``_soon`` remembered for one instant: a preloader pass asks for the same models
        once per candidate. ``key`` is (model, which grid, the grid's last horizon)."""
        if self._grid[0] != now:
            self._grid = (now, {})
        got = self._grid[1].get(key)
        if got is None:
            got = self._grid[1][key] = self._soon(key[0], now, hs, ctx)
        return got

    def eviction_loss(self, name: str, now: float,
                      at_least: float = math.inf) -> Callable[[Resident], float]:
        """Expected stall (miss cost included) that evicting a resident to preload ``name``
        causes: P(the victim is needed again before ``name``, within its horizon) x its cost.

        A victim needed before the preloaded model must come back first and push something
        out in turn (Belady's rule); one needed after it would go at that demand load anyway.
        The horizon is ``keep_s``, or ``keep_loads`` x the victim's own load time if that is
        longer: the robot's pace does not slow down with the disk, so on a disk slow enough
        that a reload takes a good part of ``keep_s`` (the 600 MB clip model at 34 s, which
        preloads pushed out 1.5 to 18 minutes before its next stream, each reload costing
        its queued requests 34-90 s) a horizon in fixed seconds prices such an eviction at
        nothing. Where every load is shorter than ``keep_s / keep_loads`` nothing changes.
        A loss of ``at_least`` or more may come back as a bound (at least ``at_least``): the
        caller only compares it, and the bound costs one horizon instead of the whole grid.
        """
        ctx = self._context(now)
        memo: dict[str, float] = {}
        weights = self.weights() if len(self.experts) > 1 else {}

        alive_to: dict[float, list[float]] = {}  # a grid's last horizon -> alive on it

        def alive(hs: tuple[float, ...]) -> list[float]:
            """P(``name`` not yet requested) at each of ``hs``, once per grid (most victims
            share ``keep_s``'s)."""
            got = alive_to.get(hs[-1])
            if got is None:
                got = alive_to[hs[-1]] = [
                    1.0 - p for p in self._cached((name, 1, hs[-1]), now, hs, ctx)]
            return got

        def lost(r: Resident) -> float:
            n = model_name(r.key)
            got = memo.get(n)
            if got is not None:
                return got
            load = self.load_s.get(n, 1.0)
            hs = self._grid_hs if self.keep_loads * load <= self.keep_s else _grid_to(
                self.keep_loads * load)
            alive_c = alive(hs)
            cost = self.miss_cost_s + load
            # alive_c only falls, so the loss is at least cost x F_v(h) x alive_c(h), h its last
            bound = cost * self._victim_soon(n, now, hs[-1:], ctx, weights, 0)[0] * alive_c[-1]
            if bound >= at_least:
                memo[n] = bound
                return bound
            p, prev_f, prev_a = 0.0, 0.0, 1.0
            for f, a in zip(self._victim_soon(n, now, hs, ctx, weights, 1), alive_c,
                            strict=True):
                p += (f - prev_f) * 0.5 * (prev_a + a)  # victim in (h', h], name not yet
                prev_f, prev_a = f, a
            memo[n] = got = cost * p
            return got
        return lost

    def _victim_soon(self, name: str, now: float, hs: Sequence[float], ctx: _Context,
                     weights: dict[str, float], key: int) -> list[float]:
        """P(a resident is requested within h), as the experts see it, weighted by their
        regret weights: ``predict``'s estimate (``_soon``), ``recency``'s h / (h + time since
        its last request) (time to the next use like the time since the last: what LRU bets
        on) and ``frequency``'s 1 - exp(-h x its faded request rate). An expert counts only
        by how much its weight exceeds ``predict``'s (no evidence, equal weights: ``predict``
        alone, Belady's rule in expectation), times ``young_n / (young_n + n)`` for a model
        requested n times (predict's estimate from many gaps is trusted). A preload's
        evictions then answer to the same regret as the demand victims: where the trace
        showed that recency predicts better (a new phase, a short trace, models seen once or
        twice), a model just used is not written off because its few gaps say it is done."""
        fs = self._cached((name, key, hs[-1]), now, hs, ctx)
        w_p = weights.get("predict", 1.0)
        young = self.young_n / (self.young_n + self.counts.get(name, 0))
        w_rec = young * max(0.0, weights.get("recency", 0.0) - w_p)
        w_freq = young * max(0.0, weights.get("frequency", 0.0) - w_p)
        if w_rec + w_freq <= 0.0:
            return fs
        st = self.stats.get(name)
        e = max(0.0, now - st.last) if st is not None else math.inf
        f, since = self._freq.get(name, (0.0, now))
        rate = f * math.exp(-max(0.0, now - since) / self.memory_s) / self.memory_s
        w_pred = 1.0 - w_rec - w_freq
        return [w_pred * p + w_rec * (h / (h + e) if e < math.inf else 0.0)
                + w_freq * (1.0 - math.exp(-h * rate)) for p, h in zip(fs, hs, strict=True)]

    def preload_candidates(self, resident_keys: Collection[str], now: float) -> list[str]:
        """The models worth preloading now (P(within their horizon, see ``_gain``) at least
        ``preload_threshold``), the largest expected saving first: the gain times the chance
        that no demand load cancels the preload (:meth:`completes`), so that a busy loader's
        few gaps go to the short loads that will finish."""
        resident = frozenset(model_name(k) for k in resident_keys)
        if resident != self._resident:
            self._resident, self._demand = resident, (math.nan, {})
        ctx = self._context(now)
        scored = []
        for n in self.stats:
            if n not in resident:
                gain, p = self._gain(n, now, ctx)
                if p >= self.preload_threshold:
                    scored.append((-gain * self.completes(n, now), n))
        return [n for _, n in sorted(scored)]


class _Context:
    """b -> (P(b still comes because a came), b's delay mean and sd, time since a's onset),
    from the most telling a, as of one instant.

    Only a whose onset was within ``window_s`` and after which b has not come yet count, and
    only when P(b | a) is ``lift`` times b's base rate. Each b is worked out when first asked
    for: a capacity check over 20 residents asks for 20 of the 200 models, and the SPEC gives
    it under 1 ms. Each b looks itself up in every a's followers until those lookups would
    add up to indexing all the followers by b, which is then done once (a preloader pass asks
    for every model). The policy drops a context on every ``observe``: it reads the policy's
    state of its instant, not a copy.
    """

    __slots__ = ("_active", "_base", "_by_b", "_followers", "_follows", "_lift", "_memo",
                 "_prior_n")

    def __init__(self, policy: EdgedPolicy, now: float) -> None:
        window, alpha = policy.window_s, policy.follow_alpha
        # (a's stats, time since a's onset, a's episodes, capped), in the stats' order
        self._active = [(st, now - st.onset, min(float(st.closed), 1.0 / alpha))
                        for st in policy.stats.values() if not now - st.onset > window]
        self._follows = [st.follow for st, _, _ in self._active]
        self._followers = sum(len(f) for f in self._follows)
        self._by_b: dict[str, list[tuple[tuple[_Stats, float, float],
                                         tuple[float, float, float]]]] | None = None
        self._base, self._lift, self._prior_n = policy._base, policy.lift, policy.prior_n
        self._memo: dict[str, tuple[float, float, float, float] | None] = {}

    def _entries(self, b: str) -> list[tuple[tuple[_Stats, float, float],
                                             tuple[float, float, float]]]:
        """The a that have learned b, with what they learned, in the stats' order."""
        if self._by_b is None and (len(self._memo) + 1) * len(self._active) <= self._followers:
            act = self._active
            return [(act[i], f[b]) for i, f in enumerate(self._follows) if b in f]
        if self._by_b is None:
            by_b: dict[str, list[tuple[tuple[_Stats, float, float],
                                       tuple[float, float, float]]]] = {}
            for a in self._active:
                for name, f in a[0].follow.items():
                    by_b.setdefault(name, []).append((a, f))
            self._by_b = by_b
        return self._by_b.get(b, [])

    def get(self, b: str) -> tuple[float, float, float, float] | None:
        """The strongest a's (P still comes, delay, sd, x) for ``b``, or None."""
        memo = self._memo
        if b in memo:
            return memo[b]
        best: tuple[float, float, float, float] | None = None
        top = 0.0
        base = self._base.get(b, 0.0)
        for (st, x, m), (p, delay, var) in self._entries(b):
            p = (p * m + self._prior_n * base) / (m + self._prior_n)
            if b in st.since or p < self._lift * base:
                continue
            d = max(delay, 0.05)
            sd = max(math.sqrt(var), 0.25 * d, 0.05)
            late = p * (1.0 - _phi((x - d) / sd))  # Bayes: P(comes | not yet after x)
            still = late / (1.0 - p + late) if late > 0 else 0.0
            if still > top:
                best, top = (still, d, sd, x), still
        memo[b] = best
        return best


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / _SQRT2))


def _bin(gap: float) -> int:
    if gap < _B0:
        return 0
    return min(_NB - 1, 1 + int(math.log(gap / _B0) / math.log(_R)))


def make_policy(name: str, tz_offset_s: float = 0.0) -> CachePolicy:
    """The policy the configuration names: ``edged`` | ``lru`` | ``lfu``. ``tz_offset_s`` is
    the device's offset from UTC: a robot's day follows local time, not UTC's."""
    makers: dict[str, Callable[[], CachePolicy]] = {
        "edged": lambda: EdgedPolicy(tz_offset_s=tz_offset_s), "lru": LruPolicy,
        "lfu": FrequencyPolicy}
    if name not in makers:
        raise ValueError(f"unknown policy {name!r} (expected edged, lru or lfu)")
    return makers[name]()
