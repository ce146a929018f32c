from edged.v1 import errors_pb2 as _errors_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_RAM: _ClassVar[Tier]
    TIER_SWAP: _ClassVar[Tier]
    TIER_STORAGE: _ClassVar[Tier]

class ModelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FORMAT_UNSPECIFIED: _ClassVar[ModelFormat]
    MODEL_FORMAT_ONNX: _ClassVar[ModelFormat]
    MODEL_FORMAT_TENSORRT: _ClassVar[ModelFormat]

class LoadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOAD_STATE_UNSPECIFIED: _ClassVar[LoadState]
    LOAD_STATE_UNLOADED: _ClassVar[LoadState]
    LOAD_STATE_LOADING: _ClassVar[LoadState]
    LOAD_STATE_READY: _ClassVar[LoadState]
    LOAD_STATE_UNLOADING: _ClassVar[LoadState]
    LOAD_STATE_FAILED: _ClassVar[LoadState]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_BALANCED: _ClassVar[Priority]
    PRIORITY_SPEED: _ClassVar[Priority]
    PRIORITY_QUALITY: _ClassVar[Priority]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ADMIT: _ClassVar[Decision]
    DECISION_ADMIT_AFTER_EVICTING: _ClassVar[Decision]
    DECISION_REJECT: _ClassVar[Decision]
TIER_UNSPECIFIED: Tier
TIER_RAM: Tier
TIER_SWAP: Tier
TIER_STORAGE: Tier
MODEL_FORMAT_UNSPECIFIED: ModelFormat
MODEL_FORMAT_ONNX: ModelFormat
MODEL_FORMAT_TENSORRT: ModelFormat
LOAD_STATE_UNSPECIFIED: LoadState
LOAD_STATE_UNLOADED: LoadState
LOAD_STATE_LOADING: LoadState
LOAD_STATE_READY: LoadState
LOAD_STATE_UNLOADING: LoadState
LOAD_STATE_FAILED: LoadState
PRIORITY_UNSPECIFIED: Priority
PRIORITY_BALANCED: Priority
PRIORITY_SPEED: Priority
PRIORITY_QUALITY: Priority
DECISION_UNSPECIFIED: Decision
DECISION_ADMIT: Decision
DECISION_ADMIT_AFTER_EVICTING: Decision
DECISION_REJECT: Decision

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("inputs", "outputs")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("version", "sha256", "size_bytes", "format", "tier", "active", "tasks", "quality", "providers", "precision", "notes", "signature", "estimated_bytes", "measured_bytes", "load_seconds", "installed_at", "engine_info", "warmup_shapes", "group", "inherited", "inherited_from", "variants", "serve")
    class EngineInfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class WarmupShapesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_AT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_INFO_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SHAPES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FIELD_NUMBER: _ClassVar[int]
    INHERITED_FROM_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SERVE_FIELD_NUMBER: _ClassVar[int]
    version: int
    sha256: str
    size_bytes: int
    format: ModelFormat
    tier: Tier
    active: bool
    tasks: _containers.RepeatedScalarFieldContainer[str]
    quality: float
    providers: _containers.RepeatedScalarFieldContainer[str]
    precision: str
    notes: str
    signature: Signature
    estimated_bytes: int
    measured_bytes: int
    load_seconds: float
    installed_at: str
    engine_info: _containers.ScalarMap[str, str]
    warmup_shapes: _containers.ScalarMap[str, str]
    group: str
    inherited: _containers.RepeatedScalarFieldContainer[str]
    inherited_from: int
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    serve: str
    def __init__(self, version: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., format: _Optional[_Union[ModelFormat, str]] = ..., tier: _Optional[_Union[Tier, str]] = ..., active: _Optional[bool] = ..., tasks: _Optional[_Iterable[str]] = ..., quality: _Optional[float] = ..., providers: _Optional[_Iterable[str]] = ..., precision: _Optional[str] = ..., notes: _Optional[str] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ..., estimated_bytes: _Optional[int] = ..., measured_bytes: _Optional[int] = ..., load_seconds: _Optional[float] = ..., installed_at: _Optional[str] = ..., engine_info: _Optional[_Mapping[str, str]] = ..., warmup_shapes: _Optional[_Mapping[str, str]] = ..., group: _Optional[str] = ..., inherited: _Optional[_Iterable[str]] = ..., inherited_from: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., serve: _Optional[str] = ...) -> None: ...

class Variant(_message.Message):
    __slots__ = ("name", "sha256", "size_bytes", "format", "precision", "quality", "notes", "estimated_bytes", "measured_bytes", "load_seconds", "installed_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size_bytes: int
    format: ModelFormat
    precision: str
    quality: float
    notes: str
    estimated_bytes: int
    measured_bytes: int
    load_seconds: float
    installed_at: str
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., format: _Optional[_Union[ModelFormat, str]] = ..., precision: _Optional[str] = ..., quality: _Optional[float] = ..., notes: _Optional[str] = ..., estimated_bytes: _Optional[int] = ..., measured_bytes: _Optional[int] = ..., load_seconds: _Optional[float] = ..., installed_at: _Optional[str] = ...) -> None: ...

class LoadedModel(_message.Message):
    __slots__ = ("name", "version", "tier", "state", "footprint_bytes", "in_flight", "requests", "worker_pid", "loaded_at", "last_used", "providers", "preloaded", "lanes", "variant", "variant_reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_PID_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PRELOADED_FIELD_NUMBER: _ClassVar[int]
    LANES_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    tier: Tier
    state: LoadState
    footprint_bytes: int
    in_flight: int
    requests: int
    worker_pid: int
    loaded_at: float
    last_used: float
    providers: _containers.RepeatedScalarFieldContainer[str]
    preloaded: bool
    lanes: int
    variant: str
    variant_reason: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., tier: _Optional[_Union[Tier, str]] = ..., state: _Optional[_Union[LoadState, str]] = ..., footprint_bytes: _Optional[int] = ..., in_flight: _Optional[int] = ..., requests: _Optional[int] = ..., worker_pid: _Optional[int] = ..., loaded_at: _Optional[float] = ..., last_used: _Optional[float] = ..., providers: _Optional[_Iterable[str]] = ..., preloaded: _Optional[bool] = ..., lanes: _Optional[int] = ..., variant: _Optional[str] = ..., variant_reason: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "active_version", "tier", "versions", "state", "loaded")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    name: str
    active_version: int
    tier: Tier
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    state: LoadState
    loaded: LoadedModel
    def __init__(self, name: _Optional[str] = ..., active_version: _Optional[int] = ..., tier: _Optional[_Union[Tier, str]] = ..., versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., state: _Optional[_Union[LoadState, str]] = ..., loaded: _Optional[_Union[LoadedModel, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("tier", "task")
    TIER_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    tier: Tier
    task: str
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., task: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class InstallHeader(_message.Message):
    __slots__ = ("name", "version", "tier", "tasks", "quality", "providers", "precision", "notes", "warmup_shapes", "group", "activate", "engine_info", "allow_signature_change", "no_inherit", "variant")
    class WarmupShapesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EngineInfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SHAPES_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_INFO_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SIGNATURE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    NO_INHERIT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    tier: Tier
    tasks: _containers.RepeatedScalarFieldContainer[str]
    quality: float
    providers: _containers.RepeatedScalarFieldContainer[str]
    precision: str
    notes: str
    warmup_shapes: _containers.ScalarMap[str, str]
    group: str
    activate: bool
    engine_info: _containers.ScalarMap[str, str]
    allow_signature_change: bool
    no_inherit: bool
    variant: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., tier: _Optional[_Union[Tier, str]] = ..., tasks: _Optional[_Iterable[str]] = ..., quality: _Optional[float] = ..., providers: _Optional[_Iterable[str]] = ..., precision: _Optional[str] = ..., notes: _Optional[str] = ..., warmup_shapes: _Optional[_Mapping[str, str]] = ..., group: _Optional[str] = ..., activate: _Optional[bool] = ..., engine_info: _Optional[_Mapping[str, str]] = ..., allow_signature_change: _Optional[bool] = ..., no_inherit: _Optional[bool] = ..., variant: _Optional[str] = ...) -> None: ...

class InstallFile(_message.Message):
    __slots__ = ("path", "size_bytes", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class InstallRequest(_message.Message):
    __slots__ = ("header", "file", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: InstallHeader
    file: InstallFile
    chunk: bytes
    def __init__(self, header: _Optional[_Union[InstallHeader, _Mapping]] = ..., file: _Optional[_Union[InstallFile, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class InstallResponse(_message.Message):
    __slots__ = ("model", "version", "sha256", "size_bytes", "seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: Model
    version: int
    sha256: str
    size_bytes: int
    seconds: float
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class InstallFromRequest(_message.Message):
    __slots__ = ("header", "source", "sha256", "size_bytes")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    header: InstallHeader
    source: str
    sha256: str
    size_bytes: int
    def __init__(self, header: _Optional[_Union[InstallHeader, _Mapping]] = ..., source: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class InstallProgress(_message.Message):
    __slots__ = ("bytes_done", "bytes_total", "stage", "result")
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_total: int
    stage: str
    result: InstallResponse
    def __init__(self, bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., stage: _Optional[str] = ..., result: _Optional[_Union[InstallResponse, _Mapping]] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("name", "version", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    force: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., force: _Optional[bool] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("removed_versions",)
    REMOVED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    removed_versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, removed_versions: _Optional[_Iterable[int]] = ...) -> None: ...

class SetTierRequest(_message.Message):
    __slots__ = ("name", "tier")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    name: str
    tier: Tier
    def __init__(self, name: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("name", "version", "allow_signature_change")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SIGNATURE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    allow_signature_change: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., allow_signature_change: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("model", "evicted", "seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: LoadedModel
    evicted: _containers.RepeatedScalarFieldContainer[str]
    seconds: float
    def __init__(self, model: _Optional[_Union[LoadedModel, _Mapping]] = ..., evicted: _Optional[_Iterable[str]] = ..., seconds: _Optional[float] = ...) -> None: ...

class UnloadRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class UnloadResponse(_message.Message):
    __slots__ = ("freed_bytes",)
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    freed_bytes: int
    def __init__(self, freed_bytes: _Optional[int] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("name", "artifact_path", "tier")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    name: str
    artifact_path: str
    tier: Tier
    def __init__(self, name: _Optional[str] = ..., artifact_path: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("decision", "evict", "numbers", "reason", "estimated_bytes")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVICT_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    evict: _containers.RepeatedScalarFieldContainer[str]
    numbers: _errors_pb2.CapacityRejection
    reason: str
    estimated_bytes: int
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., evict: _Optional[_Iterable[str]] = ..., numbers: _Optional[_Union[_errors_pb2.CapacityRejection, _Mapping]] = ..., reason: _Optional[str] = ..., estimated_bytes: _Optional[int] = ...) -> None: ...

class SelectRequest(_message.Message):
    __slots__ = ("task", "priority", "max_bytes", "max_latency_ms", "mode", "pinned")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    task: str
    priority: Priority
    max_bytes: int
    max_latency_ms: float
    mode: str
    pinned: str
    def __init__(self, task: _Optional[str] = ..., priority: _Optional[_Union[Priority, str]] = ..., max_bytes: _Optional[int] = ..., max_latency_ms: _Optional[float] = ..., mode: _Optional[str] = ..., pinned: _Optional[str] = ...) -> None: ...

class SelectCandidate(_message.Message):
    __slots__ = ("name", "version", "reason", "score")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    reason: str
    score: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., reason: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class SelectResponse(_message.Message):
    __slots__ = ("choice", "reasons", "runners_up", "mode")
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    RUNNERS_UP_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    choice: SelectCandidate
    reasons: _containers.RepeatedScalarFieldContainer[str]
    runners_up: _containers.RepeatedCompositeFieldContainer[SelectCandidate]
    mode: str
    def __init__(self, choice: _Optional[_Union[SelectCandidate, _Mapping]] = ..., reasons: _Optional[_Iterable[str]] = ..., runners_up: _Optional[_Iterable[_Union[SelectCandidate, _Mapping]]] = ..., mode: _Optional[str] = ...) -> None: ...

class OpenLaneRequest(_message.Message):
    __slots__ = ("name", "version", "client_pid", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    client_pid: int
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., client_pid: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class OpenLaneResponse(_message.Message):
    __slots__ = ("path", "version", "lane_id", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LANE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    version: int
    lane_id: int
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., version: _Optional[int] = ..., lane_id: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class MakeVariantRequest(_message.Message):
    __slots__ = ("name", "version", "kind", "accept", "accept_change", "quality")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_CHANGE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    kind: str
    accept: bool
    accept_change: float
    quality: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., accept: _Optional[bool] = ..., accept_change: _Optional[float] = ..., quality: _Optional[float] = ...) -> None: ...

class OutputChange(_message.Message):
    __slots__ = ("output", "max_abs", "mean_abs", "max_rel", "argmax_agreement")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    output: str
    max_abs: float
    mean_abs: float
    max_rel: float
    argmax_agreement: float
    def __init__(self, output: _Optional[str] = ..., max_abs: _Optional[float] = ..., mean_abs: _Optional[float] = ..., max_rel: _Optional[float] = ..., argmax_agreement: _Optional[float] = ...) -> None: ...

class MakeVariantProgress(_message.Message):
    __slots__ = ("stage", "installed", "size_bytes", "source_bytes", "seconds", "changes", "worst_change", "model", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    WORST_CHANGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    installed: bool
    size_bytes: int
    source_bytes: int
    seconds: float
    changes: _containers.RepeatedCompositeFieldContainer[OutputChange]
    worst_change: float
    model: Model
    message: str
    def __init__(self, stage: _Optional[str] = ..., installed: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., source_bytes: _Optional[int] = ..., seconds: _Optional[float] = ..., changes: _Optional[_Iterable[_Union[OutputChange, _Mapping]]] = ..., worst_change: _Optional[float] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class SetVariantRequest(_message.Message):
    __slots__ = ("name", "version", "variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    variant: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., variant: _Optional[str] = ...) -> None: ...

class RemoveVariantRequest(_message.Message):
    __slots__ = ("name", "version", "variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    variant: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., variant: _Optional[str] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("name", "artifact_path", "warmup_shapes")
    class WarmupShapesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    WARMUP_SHAPES_FIELD_NUMBER: _ClassVar[int]
    name: str
    artifact_path: str
    warmup_shapes: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., artifact_path: _Optional[str] = ..., warmup_shapes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class VariantFit(_message.Message):
    __slots__ = ("variant", "tier", "decision", "evict", "estimated_bytes", "measured_bytes", "load_seconds", "quality", "max_batch", "reason", "latency_ms")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVICT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    variant: str
    tier: Tier
    decision: str
    evict: _containers.RepeatedScalarFieldContainer[str]
    estimated_bytes: int
    measured_bytes: int
    load_seconds: float
    quality: float
    max_batch: int
    reason: str
    latency_ms: float
    def __init__(self, variant: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., decision: _Optional[str] = ..., evict: _Optional[_Iterable[str]] = ..., estimated_bytes: _Optional[int] = ..., measured_bytes: _Optional[int] = ..., load_seconds: _Optional[float] = ..., quality: _Optional[float] = ..., max_batch: _Optional[int] = ..., reason: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("name", "fits", "choice", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    fits: _containers.RepeatedCompositeFieldContainer[VariantFit]
    choice: VariantFit
    reason: str
    def __init__(self, name: _Optional[str] = ..., fits: _Optional[_Iterable[_Union[VariantFit, _Mapping]]] = ..., choice: _Optional[_Union[VariantFit, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...
