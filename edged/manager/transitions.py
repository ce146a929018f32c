"""Version switches and tier moves on the residency side: load what a change will need before
the catalog commits it, and settle what is loaded after.

The catalog calls ``prepare`` with the entry it is about to commit (its ``before_commit``).
When the change makes another version active while the model's current version is loaded, or
puts the model in the ram tier (which is always loaded), the version is loaded right there —
through the planner like any load, so a change that does not fit is refused with the numbers
(``RESOURCE_EXHAUSTED``), and a version that does not load (warm-up error, missing or corrupt
artifact, TensorRT mismatch) is refused with that error. Either way nothing is committed and
the old version keeps serving. After the commit ``settle`` retires the old version (it unloads
once its requests have finished) and accounts what stays loaded under its new tier — which
makes a model that left the ram tier evictable again.
"""

from __future__ import annotations

import logging

from edged import errors as e
from edged.manager.catalog.manifests import ModelEntry, TierState
from edged.manager.memory.residency import Residency
from edged.manager.specs import Specs
from edged.values import MEMORY_TIERS, ModelKey
from edged.views import LoadedView

log = logging.getLogger("edged.manager")


class Transition:
    def __init__(self, residency: Residency, specs: Specs, before: ModelEntry | None) -> None:
        self._res = residency
        self._specs = specs
        self._before = before
        self.loaded: list[str] = []  # keys ``prepare`` loaded
        self.load_result: tuple[LoadedView, float] | None = None  # (view, seconds)
        self.moved: list[str] = []  # keys whose tier move ``prepare`` planned

    def prepare(self, planned: ModelEntry) -> None:
        res = self._res
        before = self._before
        key = ModelKey(planned.name, planned.active)
        view = res.view(key)
        if view is not None:
            if planned.tier != view.tier and planned.tier in MEMORY_TIERS:
                # in memory already: only its new tier's budget has to hold it too (a
                # model leaving ram may make idle swap models go; into ram nothing is evicted)
                res.plan_retier(key, planned.tier)
                self.moved.append(key)
            return
        switching = before is not None and planned.active != before.active
        old_loaded = before is not None and \
            res.view(ModelKey(before.name, before.active)) is not None
        if planned.tier == "ram" or (switching and old_loaded):
            # (the spec only here: a version that cannot load may still move to storage)
            view, _, seconds = res.load(self._specs.serving_spec(planned, planned.active))
            self.loaded.append(key)
            self.load_result = (view, seconds)

    def abort(self) -> None:
        """The change was not committed after ``prepare``: unload what it loaded, and let go
        of the room a planned tier move held."""
        res = self._res
        for key in self.moved:
            res.cancel_move(key)
        for key in self.loaded:
            try:
                res.unload(key)
            except e.EdgedError as exc:
                log.warning("unloading %s after a refused change: %s", key, exc)

    def settle(self, entry: ModelEntry) -> None:
        res = self._res
        before = self._before
        if before is not None and before.active != entry.active:
            res.retire(ModelKey(before.name, before.active))
        key = ModelKey(entry.name, entry.active)
        view = res.view(key)
        if view is None:
            return
        if entry.tier == "storage":
            res.unload(key)
        elif view.tier != entry.tier:
            res.retier(key, entry.tier)
        for moved in self.moved:  # committed otherwise (to storage: unloaded) or not at all
            res.cancel_move(moved)


def plan_reload(res: Residency, old: TierState, new: TierState) -> None:
    """Before a hand edit is committed: every loaded model the edit moves between ram and
    swap must fit its new tier like a ``tier`` move (raises CapacityExceeded with the
    numbers; the edit is then rejected and nothing changes)."""
    for view in res.views():
        m = new.models.get(view.name)
        if m is not None and m.active == view.version and m.tier != view.tier and \
                m.tier in MEMORY_TIERS:
            res.plan_retier(ModelKey(view.name, view.version), m.tier)


def apply_reload(res: Residency, old: TierState, new: TierState) -> list[ModelEntry]:
    """After an accepted hand edit: settle what is loaded as ``settle`` would for each model
    the edit changed, and return the ram-tier entries that are not loaded yet (the caller
    loads them)."""
    for view in res.views():
        m = new.models.get(view.name)
        was = old.models.get(view.name)
        key = ModelKey(view.name, view.version)
        if m is None or (was is not None and was.active == view.version
                         and m.active != view.version):
            res.retire(key)  # removed by hand, or no longer the active version
        elif m.active == view.version and m.tier == "storage":
            res.retire(key)
        elif m.active == view.version and m.tier != view.tier:
            res.retier(key, m.tier)
    loaded = res.all_keys()
    return [m for m in new.models.values()
            if m.tier == "ram" and ModelKey(m.name, m.active) not in loaded]
