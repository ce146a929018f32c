"""The capacity rules that join the planner and a cache policy: a demand load's victims and the
preloader's rule.

The planner (``planner.py``) is the pure admit/evict/reject rule given an eviction order; the
policy (``policy.py``) is the statistics that order and price the residents. These two functions
are where the daemon's decisions are made from both — ``preloader.LockedPolicy`` calls them under
its lock, and ``tools/replay.py`` calls the very same functions, so what the replay measures is
what the daemon does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from edged.manager.memory import planner
from edged.manager.memory.planner import Resident
from edged.manager.memory.policy import CachePolicy, model_name
from edged.values import Budgets


def plan_demand(policy: CachePolicy, req: planner.LoadRequest,
                residents: Sequence[Resident], budgets: Budgets,
                memory: planner.Memory, now: float) -> planner.Decision:
    """A demand load's decision: the planner with the policy's order and victim costs.

    The planner's victim search is greedy along one order. By value per byte one big model
    (the LLM) comes first and alone makes room, hiding cheaper sets of smaller models; so with
    victim costs the search also runs along the order by cost, and the cheaper set wins.
    """
    cost = policy.victim_cost(now)
    first = planner.plan(req, residents, budgets, memory,
                         eviction_order=lambda rs: policy.eviction_order(rs, now),
                         victim_cost=cost)
    if cost is None or not isinstance(first, planner.AdmitAfterEvicting):
        return first
    second = planner.plan(req, residents, budgets, memory,
                          eviction_order=lambda rs: sorted(rs, key=lambda r: (cost(r), r.key)),
                          victim_cost=cost)
    if not isinstance(second, planner.AdmitAfterEvicting):
        return first
    by_key = {r.key: r for r in residents}

    def total(d: planner.AdmitAfterEvicting) -> float:
        return sum(cost(by_key[v]) for v in d.victims)
    return second if total(second) < total(first) else first


def plan_preload(policy: CachePolicy, req: planner.LoadRequest,
                 residents: Sequence[Resident], budgets: Budgets,
                 memory: planner.Memory, now: float, margin: float = 0.5,
                 min_gain_s: float = 2.0, admit: float = 0.5) -> planner.Decision:
    """The preloader's capacity rule: fit as things are, or evict only what is worth less.

    First the planner's own preload rule (never evict). If that rejects, the preload may evict
    idle swap models whose expected loss (:meth:`EdgedPolicy.eviction_loss`) is, all together,
    below the preload's gain / (1 + ``margin``): a preload never pushes out what is needed
    before it, nor what is worth as much as it brings; and one worth less than ``min_gain_s``
    (the LLM at night, wanted only by stray requests) evicts nothing. Nor does a preload evict
    a resident whose keeping is worth ``admit`` x what keeping the candidate would be or more
    (the policy's value per byte x the model's bytes: the stall each is expected to save):
    that would bet one prediction against another almost as strong, and where they are wrong
    (a conversation's turns have stopped) the preloader swaps such models round, each swap a
    load (the recorded trace at two thirds: 29 of 32 preloads wasted without this rule). The
    rule compares whole models, not bytes: by value per byte the 1.5 GiB LLM is always the
    cheapest, so a per-byte rule shielded the small models and left the LLM as the one victim
    a preload could take, and its 7.5 s reload came back as stall (2 GiB, tuning seeds:
    stall 1.03x the policy before issue 16's, 0.97x with this rule). A demand load, if the
    request does come, takes the cheapest residents instead.
    The daemon's preloader and the replay tool both call this.
    """
    first = planner.plan(replace(req, preload=True), residents, budgets, memory,
                         eviction_order=lambda rs: policy.eviction_order(rs, now))
    if not isinstance(first, planner.Reject):
        return first
    gain = policy.preload_gain(model_name(req.key), now) / (1.0 + margin)
    if gain <= min_gain_s:
        return first
    lost = policy.eviction_loss(model_name(req.key), now, at_least=gain)
    # the tier budget alone needs this much freed: give up as soon as what is still affordable
    # cannot free it (most passes end here, having priced a few recently used residents)
    need = sum(r.bytes for r in residents if r.tier == req.tier) + req.bytes - planner.tier_budget(
        budgets, req.tier)
    candidates = [r for r in residents if planner.evictable(r, req.key)]
    reachable = sum(r.bytes for r in candidates if r.tier == req.tier)
    for r in sorted(candidates, key=lambda r: (-policy.last.get(model_name(r.key), -math.inf),
                                               r.key)):
        if lost(r) >= gain and r.tier == req.tier:
            reachable -= r.bytes
            if reachable < need:
                return first

    worth = admit * policy.value(req.key, now) * req.bytes

    def affordable(rs: Sequence[Resident]) -> list[Resident]:
        return sorted((r for r in rs
                       if lost(r) < gain and policy.value(r.key, now) * r.bytes < worth),
                      key=lambda r: (lost(r) / r.bytes, r.key))

    second = planner.plan(replace(req, preload=False), residents, budgets, memory,
                          eviction_order=affordable, victim_cost=lost)
    if not isinstance(second, planner.AdmitAfterEvicting):
        return first
    by_key = {r.key: r for r in residents}
    if sum(lost(by_key[v]) for v in second.victims) >= gain:
        return first
    return second
