"""Read-only views of the daemon's state: what the manager hands to the service layer (which
turns them into protos) and what ``EdgedClient`` hands back (built from those protos), so that
the CLI and the contract suite read one set of types on either side of the socket.

Neutral on purpose: this module imports no part of edged but other value modules (the domain
errors' ``CapacityNumbers``, the telemetry ``Snapshot``), never the manager, the service layer,
the client or generated code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edged.errors import CapacityNumbers
from edged.telemetry.snapshot import Snapshot


@dataclass(frozen=True)
class TierUsage:
    tier: str
    budget_bytes: int
    used_bytes: int
    models: int
    loaded: int


@dataclass(frozen=True)
class StoreUsage:
    """The disk the store takes: what the manifests reference against budgets.storage, and
    what they do not (kept until an explicit gc, see ``quarantine``)."""

    installed_bytes: int
    budget_bytes: int
    unreferenced_artifacts: int
    unreferenced_bytes: int


@dataclass(frozen=True)
class LoadedView:
    name: str
    version: int
    tier: str
    state: str  # "loading" | "ready" | "unloading" | "failed"
    footprint_bytes: int
    in_flight: int
    requests: int
    worker_pid: int
    loaded_at: float
    last_used: float
    providers: tuple[str, ...] = ()
    preloaded: bool = False
    evicting: bool = False  # a victim on its way out: its bytes already went to a new load
    variant: str = ""  # the variant loaded ("": the version itself)
    variant_reason: str = ""  # why edged chose it (a version with variants only)
    lanes: int = 0  # open direct lanes (engines/lanes.py)


@dataclass(frozen=True)
class StatusView:
    version: str
    uptime_s: float
    state: str
    state_dir: str
    snapshot: Snapshot
    reserve_bytes: int
    tiers: tuple[TierUsage, ...]
    loaded: tuple[LoadedView, ...]
    models_installed: int
    manifest_error: str = ""
    notes: tuple[str, ...] = ()
    store: StoreUsage | None = None
    fixed_costs: Mapping[str, Any] | None = None  # engines/calibration.py, as estimates use
    gpu_budget: tuple[int, int, int] | None = None  # (budget, used, device total): discrete GPU


@dataclass(frozen=True)
class CheckView:
    decision: str  # "admit" | "admit_after_evicting" | "reject"
    evict: tuple[str, ...]
    numbers: CapacityNumbers
    reason: str
    estimated_bytes: int


@dataclass(frozen=True)
class InstallSpec:
    """What an install asks for, whatever the transport (stream, local path, URL)."""

    name: str
    version: int | None = None
    tier: str = ""  # "": the model's tier (swap for a new model)
    tasks: tuple[str, ...] = ()
    quality: float = 0.0
    providers: tuple[str, ...] = ()
    precision: str = ""
    notes: str = ""
    warmup_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    group: str | None = None
    activate: bool = True
    engine_info: dict[str, str] = field(default_factory=dict)
    allow_signature_change: bool = False
    inherit: bool = True  # what it leaves unsaid comes from the active version (catalog.install)
    variant: str = ""  # add the artifact as this variant of the version (see catalog)
