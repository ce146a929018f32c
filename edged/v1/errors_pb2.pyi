from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_ARGUMENT: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_RESOURCE_EXHAUSTED: _ClassVar[ErrorReason]
    ERROR_REASON_CAPACITY: _ClassVar[ErrorReason]
    ERROR_REASON_DISK_FULL: _ClassVar[ErrorReason]
    ERROR_REASON_QUEUE_FULL: _ClassVar[ErrorReason]
    ERROR_REASON_FAILED_PRECONDITION: _ClassVar[ErrorReason]
    ERROR_REASON_STORAGE_TIER: _ClassVar[ErrorReason]
    ERROR_REASON_SIGNATURE_CHANGED: _ClassVar[ErrorReason]
    ERROR_REASON_CHECKSUM_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_CORRUPT_ARTIFACT: _ClassVar[ErrorReason]
    ERROR_REASON_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_STOPPING: _ClassVar[ErrorReason]
    ERROR_REASON_WORKER_CRASHED: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_DEADLINE_EXCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_UNIMPLEMENTED: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_ABORTED: _ClassVar[ErrorReason]
    ERROR_REASON_MANIFEST_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_BAD_TENSOR: _ClassVar[ErrorReason]
    ERROR_REASON_BAD_NAME: _ClassVar[ErrorReason]
    ERROR_REASON_DOWNLOAD_FAILED: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_LOCAL: _ClassVar[ErrorReason]
    ERROR_REASON_NO_LANES: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_ARGUMENT: ErrorReason
ERROR_REASON_NOT_FOUND: ErrorReason
ERROR_REASON_ALREADY_EXISTS: ErrorReason
ERROR_REASON_RESOURCE_EXHAUSTED: ErrorReason
ERROR_REASON_CAPACITY: ErrorReason
ERROR_REASON_DISK_FULL: ErrorReason
ERROR_REASON_QUEUE_FULL: ErrorReason
ERROR_REASON_FAILED_PRECONDITION: ErrorReason
ERROR_REASON_STORAGE_TIER: ErrorReason
ERROR_REASON_SIGNATURE_CHANGED: ErrorReason
ERROR_REASON_CHECKSUM_MISMATCH: ErrorReason
ERROR_REASON_CORRUPT_ARTIFACT: ErrorReason
ERROR_REASON_UNAVAILABLE: ErrorReason
ERROR_REASON_STOPPING: ErrorReason
ERROR_REASON_WORKER_CRASHED: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_PERMISSION_DENIED: ErrorReason
ERROR_REASON_DEADLINE_EXCEEDED: ErrorReason
ERROR_REASON_UNIMPLEMENTED: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_ABORTED: ErrorReason
ERROR_REASON_MANIFEST_INVALID: ErrorReason
ERROR_REASON_BAD_TENSOR: ErrorReason
ERROR_REASON_BAD_NAME: ErrorReason
ERROR_REASON_DOWNLOAD_FAILED: ErrorReason
ERROR_REASON_NOT_LOCAL: ErrorReason
ERROR_REASON_NO_LANES: ErrorReason

class CapacityRejection(_message.Message):
    __slots__ = ("tier", "needed_bytes", "budget_bytes", "used_bytes", "free_bytes", "reserve_bytes", "evict_candidates")
    TIER_FIELD_NUMBER: _ClassVar[int]
    NEEDED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESERVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVICT_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    tier: str
    needed_bytes: int
    budget_bytes: int
    used_bytes: int
    free_bytes: int
    reserve_bytes: int
    evict_candidates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tier: _Optional[str] = ..., needed_bytes: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., reserve_bytes: _Optional[int] = ..., evict_candidates: _Optional[_Iterable[str]] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("reason", "message", "field", "error_id", "metadata", "capacity", "signature_diff")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ERROR_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_DIFF_FIELD_NUMBER: _ClassVar[int]
    reason: ErrorReason
    message: str
    field: str
    error_id: str
    metadata: _containers.ScalarMap[str, str]
    capacity: CapacityRejection
    signature_diff: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reason: _Optional[_Union[ErrorReason, str]] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., error_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., capacity: _Optional[_Union[CapacityRejection, _Mapping]] = ..., signature_diff: _Optional[_Iterable[str]] = ...) -> None: ...
