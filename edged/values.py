"""Value types every part of edged shares: the tiers.

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
