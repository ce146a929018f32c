"""Value types every part of edged shares: the tiers, a model version's key, a loaded model's slot
states, the budgets.

A neutral module: it imports nothing from edged, so the catalog (what is installed), the memory
side (what is loaded), the config, the service, the client and the CLI can all use it without
an import between them (an import-linter contract in pyproject.toml keeps it so).

The enums are ``StrEnum``: a member *is* its string (``Tier.RAM == "ram"``, ``str(Tier.RAM) ==
"ram"``, the same hash), so the JSON the CLI prints, the event details and the proto strings
stay exactly what they were, and code that still holds a plain string compares equal to a
member. Their ``repr`` is the string's too (``'ram'``): messages format values with ``!r``
(``tier must be 'swap'``) and argparse names its choices with ``repr``, and those texts are
part of the product. (PyYAML's safe dumper refuses str subclasses: the manifests write a tier
only as a file name, never as a value.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    """Where an installed model lives (SPEC: tiers): ``ram`` models are loaded at start and
    never evicted, ``swap`` models load on demand and may be evicted, ``storage`` models are
    installed but not loadable until moved to another tier."""

    RAM = "ram"
    SWAP = "swap"
    STORAGE = "storage"

    def __repr__(self) -> str:
        return repr(self.value)


TIERS: tuple[Tier, ...] = (Tier.RAM, Tier.SWAP, Tier.STORAGE)  # every tier, in the SPEC's order
MEMORY_TIERS: tuple[Tier, ...] = (Tier.RAM, Tier.SWAP)  # the tiers whose models hold memory



class ModelKey(str):
    """One model version: ``ModelKey("asr", 3)`` is the string ``"asr:3"``, with ``.name`` and
    ``.version`` back; ``ModelKey.parse`` is the one place a key's text is taken apart.

    A ``str`` (like the enums above): the key crosses seams that carry strings — the worker
    pool and its events, the planner's residents, lanes, traces, error messages — and stays
    the very text it always was there, while the code that builds or reads one does it here.
    Model names cannot contain ``:`` (``catalog.names``), so the split is unambiguous. The
    worker pool gets ``str(key)``: its channel uses ``marshal``, which takes only exact
    builtin types."""

    __slots__ = ()

    def __new__(cls, name: str, version: int) -> ModelKey:
        return super().__new__(cls, f"{name}:{version}")

    @classmethod
    def parse(cls, text: str) -> ModelKey:
        """``"asr:3"`` -> ``ModelKey("asr", 3)``; a ``ValueError`` for anything else."""
        name, sep, version = text.rpartition(":")
        if not sep or not name or not version.isdigit():
            raise ValueError(f"{text!r} is not a model key (name:version)")
        return cls(name, int(version))

    @property
    def name(self) -> str:
        return self.rpartition(":")[0]

    @property
    def version(self) -> int:
        return int(self.rpartition(":")[2])

    def __getnewargs__(self) -> tuple[str, int]:  # type: ignore[override]
        return self.name, self.version  # pickles and copies as itself

    def __repr__(self) -> str:
        return repr(str(self))


class SlotState(StrEnum):
    """Where a loaded (or loading) model version is in its life (``manager.memory.residency``):
    ``loading`` (admitted, its bytes booked, requests wait), ``ready`` (serving), ``unloading``
    (no new requests: it goes once its running ones finish) and ``failed`` (its load failed or
    its worker died; the slot is gone, waiters read the error). Status reports the state as this
    string (``LoadState`` in the proto)."""

    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"

    def __repr__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True)
class Budgets:
    """The budgets in bytes, resolved against the device (``config.resolve_budgets``, from the
    ``budgets`` section as written): what the planner admits loads against, what the catalog's
    tier check and the status report use. One value for all of them, so that they can never
    disagree about a number.

    ``memory_total`` 0 (a bare planner: the replay tool, planner tests) turns the whole-edged
    rule off (planner rule 4); ``gpu`` 0 means no discrete GPU (CPU, Jetson)."""

    ram: int
    swap: int
    reserve: int
    memory_total: int = 0  # the device's memory, or the simulated budgets.memory_total
    storage: int = 0  # disk for installed artifacts
    gpu: int = 0  # a discrete GPU's device memory for models (planner rule 5)
    gpu_total: int = 0  # that GPU's memory (NVML)

    def of(self, tier: str) -> int:
        """The budget of ``tier`` (any of the three)."""
        if tier == Tier.RAM:
            return self.ram
        if tier == Tier.SWAP:
            return self.swap
        if tier == Tier.STORAGE:
            return self.storage
        raise ValueError(f"unknown tier {tier!r} (expected one of {', '.join(TIERS)})")

    @property
    def edged(self) -> int:
        """``memory_total - reserve``: what edged as a whole (every tier's models and the
        daemon's own RSS) may hold, so that the reserve stays whole for the OS and the robot;
        0: not checked."""
        return max(0, self.memory_total - self.reserve) if self.memory_total else 0
