"""Value types every part of edged shares: the tiers and a loaded model's slot states.

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
