"""Measured inference latency, per model and per variant: what serving measures and what
selection (``select``) and ``recommend`` rank by.

An inference's own time (not a load it waited for), smoothed (exponentially, weight 0.1 for
the newest), kept in memory only: after a restart the first requests measure it again.
"""

from __future__ import annotations

SMOOTHING = 0.1


class Latencies:
    def __init__(self) -> None:
        self._model_ms: dict[str, float] = {}
        self._variant_ms: dict[tuple[str, str], float] = {}  # (model, variant) -> ms

    def timed(self, name: str, variant: str, ms: float) -> None:
        """One inference of ``name`` (on its ``variant``; "" for none) took ``ms``."""
        self._model_ms[name] = _smoothed(self._model_ms.get(name), ms)
        if variant:
            key = (name, variant)
            self._variant_ms[key] = _smoothed(self._variant_ms.get(key), ms)

    def of(self, name: str) -> float | None:
        return self._model_ms.get(name)

    def of_variant(self, name: str, variant: str) -> float | None:
        return self._variant_ms.get((name, variant))


def _smoothed(prev: float | None, ms: float) -> float:
    return ms if prev is None else (1 - SMOOTHING) * prev + SMOOTHING * ms
