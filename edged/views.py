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


# -- the installed models, as ``list_models`` / ``get_model`` show them ---------------------
@dataclass(frozen=True)
class TensorView:
    name: str
    datatype: str  # OIP datatype name: FP32, INT64, UINT8, ...
    shape: tuple[int, ...]  # -1 for a dynamic dimension


@dataclass(frozen=True)
class SignatureView:
    inputs: tuple[TensorView, ...] = ()
    outputs: tuple[TensorView, ...] = ()


@dataclass(frozen=True)
class VariantView:
    """Another form of a version (int8, fp16, ...); numbers 0 until a load measured them."""

    name: str
    sha256: str
    size_bytes: int
    format: str  # "onnx" | "tensorrt" | ""
    precision: str
    quality: float
    notes: str
    estimated_bytes: int
    measured_bytes: int
    load_seconds: float
    installed_at: str


@dataclass(frozen=True)
class VersionView:
    """One installed version. The names are the wire's (``edged.v1.ModelVersion``); the
    active version is in the model's tier, the others in storage."""

    version: int
    sha256: str
    size_bytes: int
    format: str  # "onnx" | "tensorrt" | ""
    tier: str
    active: bool
    tasks: tuple[str, ...]
    quality: float
    providers: tuple[str, ...]
    precision: str
    notes: str
    signature: SignatureView
    estimated_bytes: int
    measured_bytes: int  # 0 until a real load measured it
    load_seconds: float  # 0 until a real load measured it
    installed_at: str  # RFC 3339
    engine_info: Mapping[str, str] = field(default_factory=dict)
    warmup_shapes: Mapping[str, str] = field(default_factory=dict)  # input -> "1x3x64x64"
    group: str = ""
    inherited: tuple[str, ...] = ()
    inherited_from: int = 0
    variants: tuple[VariantView, ...] = ()
    serve: str = ""  # the pinned variant ("": edged chooses)


@dataclass(frozen=True)
class ModelView:
    name: str
    active_version: int
    tier: str  # "ram" | "swap" | "storage"
    versions: tuple[VersionView, ...]  # by number
    state: str  # "unloaded" | "loading" | "ready" | "unloading" | "failed"
    loaded: LoadedView | None = None


# -- results of calls -----------------------------------------------------------------------
@dataclass(frozen=True)
class InstallView:
    model: ModelView
    version: int
    sha256: str
    size_bytes: int
    seconds: float


@dataclass(frozen=True)
class LoadView:
    model: LoadedView
    evicted: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class CandidateView:
    name: str
    version: int
    reason: str
    score: float  # the priority's criterion (see edged.v1.SelectCandidate)


@dataclass(frozen=True)
class SelectView:
    choice: CandidateView | None  # None: nothing suitable
    reasons: tuple[str, ...]
    runners_up: tuple[CandidateView, ...]
    mode: str  # the mode that answered


@dataclass(frozen=True)
class FitView:
    """One variant x tier of a recommendation."""

    variant: str
    tier: str
    decision: str  # "admit" | "admit_after_evicting" | "reject" | "never"
    evict: tuple[str, ...]
    estimated_bytes: int
    measured_bytes: int
    load_seconds: float
    quality: float
    max_batch: int  # -1: no warm-up shapes to batch; 0: not even batch 1
    reason: str
    latency_ms: float  # 0: not measured yet


@dataclass(frozen=True)
class RecommendView:
    name: str
    fits: tuple[FitView, ...]
    choice: FitView | None  # None: nothing fits
    reason: str


@dataclass(frozen=True)
class OutputChangeView:
    output: str
    max_abs: float
    mean_abs: float
    max_rel: float
    argmax_agreement: float  # -1: the output has no class axis


@dataclass(frozen=True)
class VariantJobView:
    """The report of a variant job (its last message)."""

    stage: str  # "done" | "refused"
    installed: bool
    size_bytes: int
    source_bytes: int
    seconds: float
    changes: tuple[OutputChangeView, ...]
    worst_change: float
    model: ModelView | None  # set when installed
    message: str  # why it was not installed


@dataclass(frozen=True)
class EventView:
    seq: int
    time: float  # unix seconds
    kind: str
    model: str
    version: int
    message: str
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReloadView:
    ok: bool
    error: str
    models: int
