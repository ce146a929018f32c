from edged.v1 import models_pb2 as _models_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("kind", "model", "l4t_release", "jetpack", "cpu_model", "cpu_count", "gpus", "temperatures_c", "power_mw", "cpu_percent")
    class TemperaturesCEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class PowerMwEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    L4T_RELEASE_FIELD_NUMBER: _ClassVar[int]
    JETPACK_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURES_C_FIELD_NUMBER: _ClassVar[int]
    POWER_MW_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    model: str
    l4t_release: str
    jetpack: str
    cpu_model: str
    cpu_count: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuStatus]
    temperatures_c: _containers.ScalarMap[str, float]
    power_mw: _containers.ScalarMap[str, float]
    cpu_percent: float
    def __init__(self, kind: _Optional[str] = ..., model: _Optional[str] = ..., l4t_release: _Optional[str] = ..., jetpack: _Optional[str] = ..., cpu_model: _Optional[str] = ..., cpu_count: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuStatus, _Mapping]]] = ..., temperatures_c: _Optional[_Mapping[str, float]] = ..., power_mw: _Optional[_Mapping[str, float]] = ..., cpu_percent: _Optional[float] = ...) -> None: ...

class GpuStatus(_message.Message):
    __slots__ = ("name", "load_percent", "freq_hz", "memory_total_bytes", "memory_used_bytes", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOAD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    FREQ_HZ_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    load_percent: float
    freq_hz: int
    memory_total_bytes: int
    memory_used_bytes: int
    source: str
    def __init__(self, name: _Optional[str] = ..., load_percent: _Optional[float] = ..., freq_hz: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class MemoryStatus(_message.Message):
    __slots__ = ("total_bytes", "available_bytes", "swap_total_bytes", "swap_free_bytes", "nvmap_used_bytes", "simulated", "reserve_bytes", "daemon_rss_bytes")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NVMAP_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    RESERVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DAEMON_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    available_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int
    nvmap_used_bytes: int
    simulated: bool
    reserve_bytes: int
    daemon_rss_bytes: int
    def __init__(self, total_bytes: _Optional[int] = ..., available_bytes: _Optional[int] = ..., swap_total_bytes: _Optional[int] = ..., swap_free_bytes: _Optional[int] = ..., nvmap_used_bytes: _Optional[int] = ..., simulated: _Optional[bool] = ..., reserve_bytes: _Optional[int] = ..., daemon_rss_bytes: _Optional[int] = ...) -> None: ...

class TierStatus(_message.Message):
    __slots__ = ("tier", "budget_bytes", "used_bytes", "models", "loaded")
    TIER_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    tier: _models_pb2.Tier
    budget_bytes: int
    used_bytes: int
    models: int
    loaded: int
    def __init__(self, tier: _Optional[_Union[_models_pb2.Tier, str]] = ..., budget_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., models: _Optional[int] = ..., loaded: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("version", "uptime_s", "device", "memory", "tiers", "loaded", "telemetry_sources", "telemetry_errors", "state", "manifest_error", "state_dir", "models_installed", "fixed_costs", "gpu_budget", "notes", "store")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_SOURCES_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_ERRORS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_ERROR_FIELD_NUMBER: _ClassVar[int]
    STATE_DIR_FIELD_NUMBER: _ClassVar[int]
    MODELS_INSTALLED_FIELD_NUMBER: _ClassVar[int]
    FIXED_COSTS_FIELD_NUMBER: _ClassVar[int]
    GPU_BUDGET_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_s: float
    device: DeviceStatus
    memory: MemoryStatus
    tiers: _containers.RepeatedCompositeFieldContainer[TierStatus]
    loaded: _containers.RepeatedCompositeFieldContainer[_models_pb2.LoadedModel]
    telemetry_sources: _containers.RepeatedScalarFieldContainer[str]
    telemetry_errors: _containers.RepeatedScalarFieldContainer[str]
    state: str
    manifest_error: str
    state_dir: str
    models_installed: int
    fixed_costs: FixedCosts
    gpu_budget: GpuBudget
    notes: _containers.RepeatedScalarFieldContainer[str]
    store: StoreStatus
    def __init__(self, version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., device: _Optional[_Union[DeviceStatus, _Mapping]] = ..., memory: _Optional[_Union[MemoryStatus, _Mapping]] = ..., tiers: _Optional[_Iterable[_Union[TierStatus, _Mapping]]] = ..., loaded: _Optional[_Iterable[_Union[_models_pb2.LoadedModel, _Mapping]]] = ..., telemetry_sources: _Optional[_Iterable[str]] = ..., telemetry_errors: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., manifest_error: _Optional[str] = ..., state_dir: _Optional[str] = ..., models_installed: _Optional[int] = ..., fixed_costs: _Optional[_Union[FixedCosts, _Mapping]] = ..., gpu_budget: _Optional[_Union[GpuBudget, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., store: _Optional[_Union[StoreStatus, _Mapping]] = ...) -> None: ...

class StoreStatus(_message.Message):
    __slots__ = ("installed_bytes", "budget_bytes", "unreferenced_artifacts", "unreferenced_bytes")
    INSTALLED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNREFERENCED_ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    UNREFERENCED_BYTES_FIELD_NUMBER: _ClassVar[int]
    installed_bytes: int
    budget_bytes: int
    unreferenced_artifacts: int
    unreferenced_bytes: int
    def __init__(self, installed_bytes: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., unreferenced_artifacts: _Optional[int] = ..., unreferenced_bytes: _Optional[int] = ...) -> None: ...

class FixedCosts(_message.Message):
    __slots__ = ("device", "worker_bytes", "gpu_context_bytes", "source", "measured_at", "gpu_context_override")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    WORKER_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_CONTEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    GPU_CONTEXT_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    device: str
    worker_bytes: int
    gpu_context_bytes: int
    source: str
    measured_at: float
    gpu_context_override: bool
    def __init__(self, device: _Optional[str] = ..., worker_bytes: _Optional[int] = ..., gpu_context_bytes: _Optional[int] = ..., source: _Optional[str] = ..., measured_at: _Optional[float] = ..., gpu_context_override: _Optional[bool] = ...) -> None: ...

class GpuBudget(_message.Message):
    __slots__ = ("budget_bytes", "used_bytes", "device_total_bytes")
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    budget_bytes: int
    used_bytes: int
    device_total_bytes: int
    def __init__(self, budget_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., device_total_bytes: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "time", "kind", "model", "version", "message", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: float
    kind: str
    model: str
    version: int
    message: str
    details: _containers.ScalarMap[str, str]
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[float] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("follow", "since_seq", "kinds")
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    follow: bool
    since_seq: int
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, follow: _Optional[bool] = ..., since_seq: _Optional[int] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("ok", "error", "models")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    models: int
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., models: _Optional[int] = ...) -> None: ...
