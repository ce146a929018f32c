"""The capacity planner: admit, admit after evicting these models, or reject — with the numbers.

A pure function of (request, residents, budgets, live memory): no locks, no clock, no I/O, so the
same call serves a real load, a preload, ``edgectl check`` (a dry run) and the replay tool.

The rules
---------
A request must fit **both** of these, after evicting the victims the planner picks:

1. **Its tier budget.** ``used(tier) - freed(tier) + needed <= budget(tier)``. Every resident
   counts, loading ones included (their bytes are booked from the moment they are admitted).
   ``ram`` models are pinned: they are never victims, so a ``ram`` request that does not fit the
   ``ram`` budget is rejected outright. (A ``ram`` request *may* evict idle ``swap`` models — not
   for budget room, the tiers have separate budgets, but to find live memory: pinned models are
   loaded at start-up and by explicit promotes, and an operator's promote outranks the cache.)
2. **Live memory** (``/proc/meminfo``, never CUDA's free query)::

       needed + pending - freed <= available - reserve (+ swap_free for CPU-executed swap models)

   ``pending`` is the bytes of residents marked ``loading``: admitted, but not visible in
   ``MemAvailable`` yet, so they would otherwise be counted as free twice. Only CPU-executed
   ``swap``-tier models get the swap credit: GPU memory cannot be swapped, and ``ram`` models are
   pinned.
3. **No swap illusion for unswappable requests** (GPU or ``ram``). When the device is already
   swapping, a victim's bytes may partly sit in swap, and evicting it frees less RAM than its
   size. So for an unswappable request the planner also checks that all unswappable bytes after
   the load fit in the RAM edged provably holds::

       unswappable_after <= available - reserve + max(unswappable_now, visible_now - swap_used)

   where ``swap_used = swap_total - swap_free`` (every swapped page of edged is in there). When
   ``swap_total_bytes`` is unknown the planner assumes the worst (only unswappable residents are
   known to be in RAM), which is safe but stricter: pass ``SwapTotal`` when you have it.

4. **The daemon counts against the reserve's edge.** The reserve is kept for the OS and the
   robot; edged as a whole, every tier's models plus the daemon's own RSS, must stay within
   ``memory_total - reserve``::

       used(all tiers) + needed - freed + daemon_rss <= memory_total - reserve

   A daemon that grew (large plain requests, see edged/malloc_tuning.py) shrinks what models
   may take instead of eating into the reserve. Any victim frees its bytes for this rule, as
   for rule 2, so it is folded into the live-memory need.

5. **A discrete GPU's device memory is its own budget** (``budgets.gpu``; on a Jetson the GPU
   allocates from RAM and rules 1-3 hold it)::

       gpu_used + needed_gpu - freed_gpu <= gpu_budget

   where a GPU model's device bytes are its accounted bytes less its worker's host-side fixed
   cost. A rejection for this rule carries the GPU's numbers (tier ``gpu``).

Victims come only from idle (``in_flight == 0``), unpinned (``tier == "swap"``), not-loading
residents, in the order ``eviction_order`` returns (least valuable first). The planner takes the
shortest prefix of that order that makes the request fit, then drops from it (most valuable
first) every victim the request turns out not to need — a big victim late in the order can make
earlier small ones unnecessary, and keeping a model costs nothing now. The default order is the
identity: callers pass residents oldest-first, which makes it LRU; ``edged.manager.memory.policy``
supplies scored orders, and optionally ``victim_cost`` (what losing each resident costs): then
each shorter prefix completed by the cheapest single victim that makes it fit competes too, and
the cheapest set wins — an order by value per byte alone would throw out one big model where a
few small, cheaper ones suffice. The order is only asked for when eviction is on the table; the
numbers' ``evict_candidates`` are the evictable residents, in that order when it was asked for.

A **preload never evicts**: it is admitted only if it fits as things are (the daemon's preloader
may still evict *strictly less valuable* models through ``capacity.plan_preload``, which calls this
planner with a restricted eviction order). A request is **rejected** only when it would not fit
even after evicting every evictable resident; the reject carries the real numbers.

``nvmap_used_bytes`` (Jetson's GPU allocations out of the same RAM) is already excluded from
``MemAvailable`` by the kernel, so it is not subtracted again; it is kept for the reasons text.
Unknown tiers (``storage``) raise ``ValueError``: a storage model must be promoted first, and the
caller says so before asking for memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edged.errors import CapacityExceeded, CapacityNumbers
from edged.units import format_size
from edged.values import MEMORY_TIERS, Budgets, Tier


@dataclass(frozen=True)
class Resident:
    """A loaded (or loading) model version as the planner sees it."""

    key: str  # "name:version"
    tier: str  # Tier.RAM | Tier.SWAP
    bytes: int  # measured footprint if known, else the estimate
    in_flight: int  # requests running on it: never evicted under them
    gpu: bool  # GPU-executed: cannot be backed by swap
    loading: bool = False  # admitted, bytes not yet visible in MemAvailable
    gpu_bytes: int = 0  # a discrete GPU's device memory it holds (rule 5)


def tier_budget(budgets: Budgets, tier: str) -> int:
    """The budget a load into ``tier`` is planned against: ram or swap only (a storage-tier
    model holds no memory; callers refuse it before they plan)."""
    if tier not in MEMORY_TIERS:
        raise ValueError(f"tier {tier!r} holds no memory "
                         f"(expected one of {', '.join(MEMORY_TIERS)})")
    return budgets.of(tier)


@dataclass(frozen=True)
class Memory:
    """Live telemetry from ``/proc/meminfo``."""

    available_bytes: int
    swap_free_bytes: int
    nvmap_used_bytes: int | None = None
    swap_total_bytes: int | None = None
    daemon_rss_bytes: int = 0  # the daemon's own RSS (rule 4)


@dataclass(frozen=True)
class LoadRequest:
    key: str
    tier: str
    bytes: int
    gpu: bool = False
    preload: bool = False
    gpu_bytes: int = 0  # device memory it will take on a discrete GPU (rule 5)


@dataclass(frozen=True)
class Admit:
    numbers: CapacityNumbers


@dataclass(frozen=True)
class AdmitAfterEvicting:
    victims: tuple[str, ...]
    numbers: CapacityNumbers


@dataclass(frozen=True)
class Reject:
    reason: str
    numbers: CapacityNumbers


Decision = Admit | AdmitAfterEvicting | Reject
EvictionOrder = Callable[[Sequence[Resident]], Sequence[Resident]]


def lru_order(residents: Sequence[Resident]) -> Sequence[Resident]:
    """The default order: the caller passes residents oldest-first, so LRU is the identity."""
    return residents


def evictable(resident: Resident, key: str = "") -> bool:
    """Only idle, unpinned, fully loaded models other than the request itself can be evicted."""
    return (resident.tier == Tier.SWAP and resident.in_flight == 0 and not resident.loading
            and resident.key != key)


@dataclass(slots=True)  # internal and short-lived: a frozen __init__ costs 2-3x
class _Need:
    """What a request needs freed, in the three currencies of the rules above."""

    tier_bytes: int  # tier budget bytes that must be freed
    live_bytes: int  # live memory that must be freed (any victim counts fully)
    unswap_bytes: int  # RAM for unswappable models that must be freed (GPU victims only)
    gpu_bytes: int = 0  # discrete-GPU device memory that must be freed (GPU victims only)

    def met(self, tier_freed: int, live_freed: int, unswap_freed: int,
            gpu_freed: int = 0) -> bool:
        return (tier_freed >= self.tier_bytes and live_freed >= self.live_bytes
                and unswap_freed >= self.unswap_bytes and gpu_freed >= self.gpu_bytes)


@dataclass(frozen=True)
class _Totals:
    """The residents' sums the rules need, computed once (selection plans many requests)."""

    used: dict[str, int]  # bytes per tier
    pending: int  # loading residents
    unswap_all: int  # unswappable residents, loading ones included
    unswap_visible: int  # unswappable residents already in MemAvailable
    visible: int  # every resident already in MemAvailable
    gpu_used: int = 0  # discrete-GPU device memory of every resident

    @classmethod
    def of(cls, residents: Sequence[Resident]) -> _Totals:
        used: dict[str, int] = dict.fromkeys(MEMORY_TIERS, 0)
        pending = unswap_all = unswap_visible = visible = 0
        for r in residents:
            used[r.tier] = used.get(r.tier, 0) + r.bytes
            if r.loading:
                pending += r.bytes
            else:
                visible += r.bytes
            if _unswappable(r):
                unswap_all += r.bytes
                if not r.loading:
                    unswap_visible += r.bytes
        return cls(used, pending, unswap_all, unswap_visible, visible,
                   sum(r.gpu_bytes for r in residents))


def _need(req: LoadRequest, t: _Totals, budgets: Budgets, memory: Memory) -> tuple[_Need, int]:
    """What ``req`` needs freed under the module's rules, and the live free bytes."""
    unswappable_req = req.gpu or req.tier == Tier.RAM
    swap_credit = 0 if unswappable_req else memory.swap_free_bytes
    free = memory.available_bytes - t.pending + swap_credit
    unswap = 0
    if unswappable_req:  # rule 3: every unswappable model must sit in RAM edged holds
        if memory.swap_total_bytes is None:
            ram_held = t.unswap_visible
        else:
            swap_used = max(0, memory.swap_total_bytes - memory.swap_free_bytes)
            ram_held = max(t.unswap_visible, t.visible - swap_used)
        ram_for_edged = memory.available_bytes - budgets.reserve + ram_held
        unswap = t.unswap_all + req.bytes - ram_for_edged
    live = req.bytes - (free - budgets.reserve)
    if budgets.edged:  # rule 4: models + the daemon itself within memory_total - reserve
        live = max(live, sum(t.used.values()) + req.bytes + memory.daemon_rss_bytes
                   - budgets.edged)
    gpu = (t.gpu_used + req.gpu_bytes - budgets.gpu
           if budgets.gpu and req.gpu_bytes else 0)
    need = _Need(tier_bytes=t.used.get(req.tier, 0) + req.bytes - tier_budget(budgets, req.tier),
                 live_bytes=live, unswap_bytes=unswap, gpu_bytes=gpu)
    return need, free


def plan(req: LoadRequest, residents: Sequence[Resident], budgets: Budgets, memory: Memory,
         eviction_order: EvictionOrder = lru_order,
         victim_cost: Callable[[Resident], float] | None = None) -> Decision:
    """Decide whether ``req`` fits; see the module docstring for the rules.

    ``residents`` are the other loaded models (the caller leaves out ``req.key`` itself).
    ``victim_cost`` (optional) is what losing a resident costs: the cheapest fitting victim
    set is chosen among the order's prefixes, each completed by its cheapest single finisher.
    """
    budget = tier_budget(budgets, req.tier)
    totals = _Totals.of(residents)
    need, free = _need(req, totals, budgets, memory)
    # the order is only asked for when eviction is on the table (it may be a scored, costlier
    # policy call); otherwise the candidates are listed as the caller gave them
    considering = not need.met(0, 0, 0) and not req.preload and req.bytes <= budget
    ordered = eviction_order(residents) if considering else residents
    candidates = [r for r in ordered if evictable(r, req.key)]
    numbers = CapacityNumbers(tier=req.tier, needed_bytes=req.bytes, budget_bytes=budget,
                              used_bytes=totals.used.get(req.tier, 0), free_bytes=free,
                              reserve_bytes=budgets.reserve,
                              evict_candidates=tuple(r.key for r in candidates))
    if need.met(0, 0, 0):
        return Admit(numbers)
    if budgets.gpu and req.gpu_bytes > budgets.gpu:
        return Reject(f"{req.key} needs more device memory than the whole GPU budget",
                      _gpu_numbers(req, totals, budgets, candidates))
    if req.bytes > budget:
        return Reject(f"{req.key} needs more than the whole {req.tier} budget", numbers)
    if req.tier == Tier.RAM and need.tier_bytes > 0:
        return Reject(f"the {req.tier} tier is full of pinned models", numbers)
    if req.preload:
        return Reject(f"preload of {req.key} would need evicting; preloads never evict",
                      numbers)
    victims = _victims(req, candidates, need, victim_cost)
    if victims is None:
        if need.gpu_bytes > sum(r.gpu_bytes for r in candidates):
            return Reject(f"{req.key} does not fit the GPU budget even after evicting all "
                          f"{len(candidates)} idle swap models",
                          _gpu_numbers(req, totals, budgets, candidates))
        return Reject(_why_not(req, candidates, need, memory, budgets.reserve), numbers)
    return AdmitAfterEvicting(tuple(v.key for v in victims), numbers)


def admissible(reqs: Sequence[LoadRequest], residents: Sequence[Resident], budgets: Budgets,
               memory: Memory) -> list[str]:
    """For each demand request, what ``plan`` would decide: ``"admit"`` (fits as things are),
    ``"evict"`` (fits after evicting) or ``"reject"``.

    The same rules as ``plan`` with the residents' sums computed once, for selection over a
    few hundred candidates: a request is rejected only if it does not fit even after evicting
    every evictable resident, so no eviction order (and no victim search) is needed. A request
    whose key is among the residents (a load on its way) is planned in full."""
    keys = {r.key for r in residents}
    totals = _Totals.of(residents)
    victims = [r for r in residents if evictable(r)]  # a request not among them is no victim
    all_freed = sum(r.bytes for r in victims)
    unswap_freed = sum(r.bytes for r in victims if _unswappable(r))
    gpu_freed = sum(r.gpu_bytes for r in victims)
    tier_freed: dict[str, int] = {t: sum(r.bytes for r in victims if r.tier == t)
                                  for t in MEMORY_TIERS}
    out = []
    for req in reqs:
        if req.key in keys or req.preload:
            d = plan(req, [r for r in residents if r.key != req.key], budgets, memory)
            out.append("admit" if isinstance(d, Admit) else
                       "evict" if isinstance(d, AdmitAfterEvicting) else "reject")
            continue
        need, _ = _need(req, totals, budgets, memory)
        if need.met(0, 0, 0):
            out.append("admit")
        elif req.bytes > tier_budget(budgets, req.tier) \
                or (req.tier == Tier.RAM and need.tier_bytes > 0) \
                or (budgets.gpu and req.gpu_bytes > budgets.gpu):
            out.append("reject")
        else:
            fits = need.met(tier_freed.get(req.tier, 0), all_freed, unswap_freed, gpu_freed)
            out.append("evict" if fits else "reject")
    return out


def _gpu_numbers(req: LoadRequest, t: _Totals, budgets: Budgets,
                 candidates: Sequence[Resident]) -> CapacityNumbers:
    """A rejection's numbers in the GPU's own currency (tier "gpu": device memory)."""
    return CapacityNumbers(tier="gpu", needed_bytes=req.gpu_bytes,
                           budget_bytes=budgets.gpu, used_bytes=t.gpu_used,
                           free_bytes=max(0, budgets.gpu - t.gpu_used), reserve_bytes=0,
                           evict_candidates=tuple(r.key for r in candidates))


def _unswappable(r: Resident) -> bool:
    return r.gpu or r.tier == Tier.RAM


def _victims(req: LoadRequest, candidates: Sequence[Resident], need: _Need,
             victim_cost: Callable[[Resident], float] | None) -> list[Resident] | None:
    """The shortest fitting prefix of ``candidates``, minus the victims it does not need.

    With ``victim_cost``: an order ranks by value per byte, which is right when much must go,
    but when a little room is needed it would throw out one big model where a few small,
    cheaper ones suffice. So the planner also tries each non-fitting prefix completed by the
    cheapest single candidate that makes it fit, and keeps the cheapest of all (a greedy, not
    an exact minimum: O(n^2) for n evictable residents).
    """
    # what each candidate frees in the four currencies (bytes are ints: every sum is exact);
    # victims are handled as indices into candidates, and each cost is asked for once
    frees = [(x.bytes if x.tier == req.tier else 0, x.bytes,
              x.bytes if _unswappable(x) else 0, x.gpu_bytes) for x in candidates]
    costs: list[float | None] = [None] * len(candidates)
    nt, nl, nu, ng = need.tier_bytes, need.live_bytes, need.unswap_bytes, need.gpu_bytes
    t = lv = u = g = 0  # what the prefix frees
    options: list[list[int]] = []
    for i in range(len(candidates)):
        if victim_cost is not None:  # the cheapest single finisher (the first of equals)
            best, best_cost = -1, 0.0
            for j in range(i, len(candidates)):
                ft, fl, fu, fg = frees[j]
                if t + ft >= nt and lv + fl >= nl and u + fu >= nu and g + fg >= ng:
                    c = costs[j]
                    if c is None:
                        c = costs[j] = victim_cost(candidates[j])
                    if best < 0 or c < best_cost:
                        best, best_cost = j, c
            if best >= 0:
                options.append([*range(i), best])
        ft, fl, fu, fg = frees[i]
        t, lv, u, g = t + ft, lv + fl, u + fu, g + fg
        if t >= nt and lv >= nl and u >= nu and g >= ng:
            options.append(list(range(i + 1)))
            break
    if not options:
        return None
    pruned = [_prune(o, frees, need) for o in options]
    if victim_cost is None:
        return [candidates[j] for j in pruned[-1]]

    def total(o: list[int]) -> float:
        out: float = 0  # as sum() does: int 0, then the costs
        for j in o:
            c = costs[j]
            if c is None:
                c = costs[j] = victim_cost(candidates[j])
            out += c
        return out
    return [candidates[j] for j in min(pruned, key=lambda o: (total(o), len(o)))]


def _prune(chosen: list[int], frees: Sequence[tuple[int, int, int, int]],
           need: _Need) -> list[int]:
    """Drop victims (indices into ``frees``: what each frees in the four currencies) the
    request turns out not to need, most valuable (latest) first."""
    chosen = list(chosen)
    tier = live = unswap = gpu = 0
    for j in chosen:
        ft, fl, fu, fg = frees[j]
        tier, live, unswap, gpu = tier + ft, live + fl, unswap + fu, gpu + fg
    for i in range(len(chosen) - 2, -1, -1):
        ft, fl, fu, fg = frees[chosen[i]]
        if need.met(tier - ft, live - fl, unswap - fu, gpu - fg):
            tier, live, unswap, gpu = tier - ft, live - fl, unswap - fu, gpu - fg
            del chosen[i]
    return chosen


def _why_not(req: LoadRequest, candidates: Sequence[Resident], need: _Need,
             memory: Memory, reserve: int) -> str:
    """The real cause, in words: which limit (the tier's budget, RAM, live memory), what
    eviction could do (only idle models of the swap tier are evictable), and — the usual cause
    on a small device — free memory already below the reserve."""
    evictable_bytes = sum(r.bytes for r in candidates)
    where = (f"the {req.tier} tier's budget" if need.tier_bytes > evictable_bytes
             else "RAM (GPU memory cannot be swapped)" if req.gpu
             else "RAM (the ram tier is never swapped)" if req.tier == Tier.RAM
             else "live memory")
    n = len(candidates)
    evicting = (f"even after evicting all {n} idle swap-tier model{'s' if n != 1 else ''}"
                if n else "and no idle swap-tier model can be evicted")
    gpu = (f"; the GPU holds {format_size(memory.nvmap_used_bytes)} (NvMap)"
           if req.gpu and memory.nvmap_used_bytes is not None else "")
    daemon = (f"; the daemon itself holds {format_size(memory.daemon_rss_bytes)}"
              if memory.daemon_rss_bytes else "")
    low = (f"; free memory ({format_size(memory.available_bytes)}) is below the reserve "
           f"({format_size(reserve)}) kept for the OS and the robot's own processes"
           if memory.available_bytes < reserve else "")
    return f"{req.key} ({req.tier} tier) does not fit {where} {evicting}{gpu}{daemon}{low}"


def raise_if_rejected(decision: Decision) -> Admit | AdmitAfterEvicting:
    """Turn a ``Reject`` into ``CapacityExceeded`` (RESOURCE_EXHAUSTED with the numbers)."""
    if isinstance(decision, Reject):
        raise CapacityExceeded(decision.reason, decision.numbers)
    return decision
