"""The one bridge from what is installed to what is loaded: a catalog entry's version becomes a
``LoadSpec`` (artifact path, engine options, tier, bytes, load peak, variant).

A version that cannot run here is refused when its spec is made, before any worker starts: a
missing artifact (``DATA_LOSS``, see ``catalog.artifacts``) or a TensorRT engine built with
another TensorRT (``FAILED_PRECONDITION``, see ``catalog.engine_compat``). Specs are cached per
catalog entry (entries are immutable: a change makes a new one), because the inference path
asks for one on every request. Which variant a request or load uses is decided here too
(``memory.variants.choose``, against the residency's plan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edged import errors as e
from edged.config import EnginesConfig
from edged.manager.catalog import engine_compat
from edged.manager.catalog.artifacts import MissingArtifacts
from edged.manager.catalog.manifests import ModelEntry, VersionEntry
from edged.manager.memory import planner, variants
from edged.manager.memory.residency import LoadSpec
from edged.manager.seams import EventSink
from edged.values import Budgets
from edged.views import LoadedView

if TYPE_CHECKING:
    from edged.engines.base import EngineOptions


class VersionOptions:
    """The engine options a catalog version is opened with: its providers, precision and
    warm-up shapes, the config's threads and cuDNN settings, this device's measured fixed
    costs (``calibrate``), and for a GPU model the CUDA arena cap (its admitted bytes plus
    ``engines.gpu_mem_headroom``)."""

    def __init__(self, engines: EnginesConfig,
                 calibrate: Callable[[EngineOptions], EngineOptions],
                 ort_providers: tuple[str, ...]) -> None:
        """``ort_providers``: what the installed onnxruntime ships (found from its files:
        onnxruntime stays out of the daemon)."""
        self._cfg = engines
        self._calibrate = calibrate
        self._ort_providers = ort_providers

    def __call__(self, v: VersionEntry) -> EngineOptions:
        from edged.engines.base import EngineOptions
        from edged.engines.estimate import choose_providers, gpu_mem_limit

        cfg = self._cfg
        opts = EngineOptions(
            providers=tuple(v.providers), precision=v.precision or "fp32",
            tensorrt_ep="TensorrtExecutionProvider" in v.providers,
            intra_op_threads=cfg.intra_op_threads, inter_op_threads=cfg.inter_op_threads,
            warmup_shapes={k: tuple(s) for k, s in (v.warmup_shapes or {}).items()},
            engine_info=dict(v.engine_info or {}),
            cudnn_conv_algo_search=cfg.cudnn_conv_algo_search,
            cudnn_conv_use_max_workspace=cfg.cudnn_conv_use_max_workspace)
        opts = self._calibrate(opts)
        gpu = v.format == "tensorrt" or any(
            p != "CPUExecutionProvider" for p in choose_providers(self._ort_providers, opts))
        return replace(opts, uses_gpu=gpu,
                       gpu_mem_limit_bytes=gpu_mem_limit(v.measured_bytes or v.estimated_bytes,
                                                         cfg.gpu_mem_headroom)
                       if gpu else 0)


class Placement(Protocol):
    """What the residency tells the variant choice: what is loaded, what a load would get."""

    def view(self, key: str) -> LoadedView | None: ...

    def plan(self, spec: LoadSpec, preload: bool = False,
             memory: planner.Memory | None = None) -> planner.Decision: ...


class CatalogReader(Protocol):
    """The catalog as the preloader's view reads it (``catalog.catalog.Catalog``)."""

    def get(self, name: str) -> ModelEntry: ...

    def list(self) -> list[ModelEntry]: ...


class Specs:
    def __init__(self, *, artifact_path: Callable[[str], Path],
                 engine_options: Callable[[VersionEntry], EngineOptions], budgets: Budgets,
                 placement: Placement, events: EventSink, missing: MissingArtifacts,
                 tensorrt_version: Callable[[], str | None] =
                 engine_compat.installed_tensorrt_version,
                 max_quality_drop: float = variants.DEFAULT_MAX_QUALITY_DROP) -> None:
        """``artifact_path``: the store's path of an artifact id; ``engine_options``: the
        options a version is opened with (config, calibration, providers); ``budgets``: the
        tier budgets a load's peak is bounded by; ``tensorrt_version``: the installed
        TensorRT, looked up once, on the first TensorRT spec."""
        self._path = artifact_path
        self._engine_options = engine_options
        self._budgets = budgets
        self._placement = placement
        self._events = events
        self._missing = missing
        self._trt_probe = tensorrt_version
        self._trt: list[str | None] = []  # the installed TensorRT, looked up once
        self.max_quality_drop = max_quality_drop
        self._cache: dict[tuple[str, int, str | None, str], tuple[ModelEntry, LoadSpec]] = {}

    def load_spec(self, entry: ModelEntry, version: int, tier: str | None = None,
                  variant: str = "") -> LoadSpec:
        """The load spec of one version (in one of its variants; "": the version itself, or
        the one pinned); cached per catalog entry."""
        key = (entry.name, version, tier, variant)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is entry:
            return hit[1]
        spec = self._make(entry, version, tier, variant)
        self._cache[key] = (entry, spec)
        return spec

    def serving_spec(self, entry: ModelEntry, version: int, tier: str | None = None,
                     announce: bool = True) -> LoadSpec:
        """The spec a request or a load of ``version`` uses: its loaded variant if it is
        loaded, else the variant ``variants.choose`` picks now (an event says which, when
        it is not the version itself). Without variants: ``load_spec`` (the request path
        pays nothing for them)."""
        v = entry.versions.get(version)
        if v is None or not v.variants:
            return self.load_spec(entry, version, tier)
        view = self._placement.view(f"{entry.name}:{version}")
        if view is not None:
            return self.load_spec(entry, version, tier, view.variant)
        if v.serve:
            return replace(self.load_spec(entry, version, tier, v.serve),
                           variant_reason=f"variant {v.serve} is pinned")
        specs = {n: self.load_spec(entry, version, tier, n) for n in v.variant_names}
        choice = variants.choose(specs, {n: v.variant(n).quality for n in specs},
                                 v.variant_name, self._placement.plan,
                                 max_quality_drop=self.max_quality_drop)
        if announce and choice.spec.variant != v.variant_name:
            self._events.publish("variant", entry.name, version,
                                 f"serving {choice.spec.variant}: {choice.reason}",
                                 variant=choice.spec.variant)
        return replace(choice.spec, variant_reason=choice.reason)

    def unservable(self, entry: ModelEntry, version: int) -> e.EdgedError | None:
        """What ``load_spec`` would refuse ``version`` with (a missing artifact, another
        TensorRT), or None — for callers that skip such versions."""
        try:
            self.load_spec(entry, version)
        except e.EdgedError as exc:
            return exc
        return None

    def _make(self, entry: ModelEntry, version: int, tier: str | None,
              variant: str = "") -> LoadSpec:
        top = entry.versions.get(version)
        if top is None:
            raise e.NotFound(f"model '{entry.name}' has no version {version}", field="version")
        v = top.variant(variant or top.serve)
        self._missing.check(entry.name, version, v)
        if v.format == "tensorrt":
            if not self._trt:
                self._trt.append(self._trt_probe())
            engine_compat.check_tensorrt(entry.name, version, v.engine_info, self._trt[0])
        options = self._engine_options(v)
        tier = tier or (entry.tier if version == entry.active and entry.tier != "storage"
                        else "swap")
        return LoadSpec(name=entry.name, version=version, tier=tier,
                        artifact=self._path(v.store_id), fmt=v.format, options=options,
                        group=v.group, bytes=v.measured_bytes or v.estimated_bytes,
                        gpu=options.uses_gpu or engine_compat.uses_gpu(v.format, v.providers),
                        peak=self._load_peak(v, tier), variant=v.variant_name)

    def _load_peak(self, v: VersionEntry, tier: str) -> int:
        """An ONNX load holds one more copy of the weights for a moment (the parsed protobuf
        and the initialized tensors); the artifact's size stands for the weights. It never
        exceeds the larger of the footprint and the tier's budget, so a model that fits its
        tier once loaded is never refused for its load alone."""
        steady = v.measured_bytes or v.estimated_bytes
        if v.format != "onnx":
            return steady
        budget = self._budgets.ram if tier == "ram" else self._budgets.swap
        return min(steady + v.size_bytes, max(steady, budget))


class CatalogModels:
    """The installed models as the preloader sees them (``memory.preloader.PreloadModels``):
    the memory side never reads the catalog itself."""

    def __init__(self, catalog: CatalogReader, specs: Specs) -> None:
        self._catalog = catalog
        self._specs = specs

    def sizes(self) -> list[tuple[str, int, float]]:
        out = []
        for entry in self._catalog.list():
            v = entry.versions[entry.active]
            out.append((entry.name, v.measured_bytes or v.estimated_bytes,
                        v.load_seconds or 1.0))
        return out

    def preload_spec(self, name: str) -> LoadSpec | None:
        try:
            entry = self._catalog.get(name)
        except e.NotFound:
            return None
        if entry.tier != "swap":
            return None
        try:
            return self._specs.serving_spec(entry, entry.active)
        except e.EdgedError:  # missing artifact, another TensorRT: nothing to preload
            return None
