from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
EVENT_KIND_COMPLETED: EventKind
EVENT_KIND_CREDENTIAL_REFUSED: EventKind
EVENT_KIND_FAILED: EventKind
EVENT_KIND_FORCE_RELEASED: EventKind
EVENT_KIND_HEARTBEAT: EventKind
EVENT_KIND_NAMESPACE_CHANGED: EventKind
EVENT_KIND_NAMESPACE_CREATED: EventKind
EVENT_KIND_PURGED: EventKind
EVENT_KIND_RECLAIMED: EventKind
EVENT_KIND_REFUSED_FINGERPRINT: EventKind
EVENT_KIND_REFUSED_STALE_TOKEN: EventKind
EVENT_KIND_RELEASED: EventKind
EVENT_KIND_RESERVED: EventKind
EVENT_KIND_RESET: EventKind
EVENT_KIND_RESTORE_FENCED: EventKind
EVENT_KIND_ROLE_GRANTED: EventKind
EVENT_KIND_ROLE_REVOKED: EventKind
EVENT_KIND_TAKEN_OVER: EventKind
EVENT_KIND_TOKEN_CREATED: EventKind
EVENT_KIND_TOKEN_REVOKED: EventKind
EVENT_KIND_UNSPECIFIED: EventKind
STATE_COMPLETED: State
STATE_FAILED: State
STATE_LEASED: State
STATE_PURGED: State
STATE_RELEASED: State
STATE_UNSPECIFIED: State

class Acquired(_message.Message):
    __slots__ = ["attempt", "checkpoint", "fencing_token", "lease_expires_at", "lease_ttl", "previous_owner", "takeover"]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_OWNER_FIELD_NUMBER: _ClassVar[int]
    TAKEOVER_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    checkpoint: bytes
    fencing_token: int
    lease_expires_at: _timestamp_pb2.Timestamp
    lease_ttl: _duration_pb2.Duration
    previous_owner: str
    takeover: bool
    def __init__(self, fencing_token: _Optional[int] = ..., lease_expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., attempt: _Optional[int] = ..., takeover: bool = ..., previous_owner: _Optional[str] = ..., checkpoint: _Optional[bytes] = ...) -> None: ...

class CompleteBatchItem(_message.Message):
    __slots__ = ["fencing_token", "key", "result"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    key: str
    result: bytes
    def __init__(self, key: _Optional[str] = ..., fencing_token: _Optional[int] = ..., result: _Optional[bytes] = ...) -> None: ...

class CompleteBatchRequest(_message.Message):
    __slots__ = ["items", "namespace"]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CompleteBatchItem]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ..., items: _Optional[_Iterable[_Union[CompleteBatchItem, _Mapping]]] = ...) -> None: ...

class CompleteBatchResponse(_message.Message):
    __slots__ = ["results"]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CompleteBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[CompleteBatchResult, _Mapping]]] = ...) -> None: ...

class CompleteBatchResult(_message.Message):
    __slots__ = ["completed", "error"]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    completed: CompleteResponse
    error: ItemError
    def __init__(self, completed: _Optional[_Union[CompleteResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ["fencing_token", "key", "namespace", "result"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    key: str
    namespace: str
    result: bytes
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., fencing_token: _Optional[int] = ..., result: _Optional[bytes] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ["already_completed", "completed_at"]
    ALREADY_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    already_completed: bool
    completed_at: _timestamp_pb2.Timestamp
    def __init__(self, completed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., already_completed: bool = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ["completed_at", "fencing_token", "owner", "result"]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    completed_at: _timestamp_pb2.Timestamp
    fencing_token: int
    owner: str
    result: bytes
    def __init__(self, result: _Optional[bytes] = ..., completed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., fencing_token: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ["attempts", "checkpoint", "created_at", "error", "expires_at", "fencing_token", "fingerprint", "finished_at", "key", "lease_expired", "lease_expires_at", "metadata", "namespace", "owner", "purged_at", "result", "state", "updated_at"]
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PURGED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    checkpoint: bytes
    created_at: _timestamp_pb2.Timestamp
    error: WorkError
    expires_at: _timestamp_pb2.Timestamp
    fencing_token: int
    fingerprint: bytes
    finished_at: _timestamp_pb2.Timestamp
    key: str
    lease_expired: bool
    lease_expires_at: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    namespace: str
    owner: str
    purged_at: _timestamp_pb2.Timestamp
    result: bytes
    state: State
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., state: _Optional[_Union[State, str]] = ..., owner: _Optional[str] = ..., fencing_token: _Optional[int] = ..., lease_expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., lease_expired: bool = ..., attempts: _Optional[int] = ..., fingerprint: _Optional[bytes] = ..., result: _Optional[bytes] = ..., error: _Optional[_Union[WorkError, _Mapping]] = ..., checkpoint: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., purged_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ["at", "attempt", "caller", "detail", "fencing_token", "id", "key", "kind", "namespace", "owner"]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    attempt: int
    caller: str
    detail: _struct_pb2.Struct
    fencing_token: int
    id: int
    key: str
    kind: EventKind
    namespace: str
    owner: str
    def __init__(self, id: _Optional[int] = ..., namespace: _Optional[str] = ..., key: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., fencing_token: _Optional[int] = ..., owner: _Optional[str] = ..., attempt: _Optional[int] = ..., caller: _Optional[str] = ..., at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class FailRequest(_message.Message):
    __slots__ = ["error", "fencing_token", "key", "namespace", "retryable"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    error: WorkError
    fencing_token: int
    key: str
    namespace: str
    retryable: bool
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., fencing_token: _Optional[int] = ..., error: _Optional[_Union[WorkError, _Mapping]] = ..., retryable: bool = ...) -> None: ...

class FailResponse(_message.Message):
    __slots__ = ["already_failed", "state"]
    ALREADY_FAILED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    already_failed: bool
    state: State
    def __init__(self, state: _Optional[_Union[State, str]] = ..., already_failed: bool = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ["attempts", "error", "failed_at", "fencing_token"]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    error: WorkError
    failed_at: _timestamp_pb2.Timestamp
    fencing_token: int
    def __init__(self, error: _Optional[_Union[WorkError, _Mapping]] = ..., failed_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., fencing_token: _Optional[int] = ..., attempts: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ["checkpoint", "fencing_token", "key", "lease_ttl", "namespace"]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    checkpoint: bytes
    fencing_token: int
    key: str
    lease_ttl: _duration_pb2.Duration
    namespace: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., fencing_token: _Optional[int] = ..., lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., checkpoint: _Optional[bytes] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ["lease_expires_at"]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, lease_expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class InProgress(_message.Message):
    __slots__ = ["attempt", "lease_expires_at", "owner", "retry_after"]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    lease_expires_at: _timestamp_pb2.Timestamp
    owner: str
    retry_after: _duration_pb2.Duration
    def __init__(self, owner: _Optional[str] = ..., lease_expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., retry_after: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., attempt: _Optional[int] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ["code", "field", "message", "metadata", "reason"]
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    field: str
    message: str
    metadata: _containers.ScalarMap[str, str]
    reason: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class LookupBatchRequest(_message.Message):
    __slots__ = ["keys", "namespace"]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupBatchResponse(_message.Message):
    __slots__ = ["results"]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LookupBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[LookupBatchResult, _Mapping]]] = ...) -> None: ...

class LookupBatchResult(_message.Message):
    __slots__ = ["entry", "error"]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    error: ItemError
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ["include_history", "key", "namespace"]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    include_history: bool
    key: str
    namespace: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., include_history: bool = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ["entry", "history", "history_truncated"]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    history: _containers.RepeatedCompositeFieldContainer[Event]
    history_truncated: bool
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., history: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., history_truncated: bool = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ["fencing_token", "key", "namespace"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    key: str
    namespace: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ["already_released"]
    ALREADY_RELEASED_FIELD_NUMBER: _ClassVar[int]
    already_released: bool
    def __init__(self, already_released: bool = ...) -> None: ...

class ReserveBatchItem(_message.Message):
    __slots__ = ["fingerprint", "key", "metadata"]
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    fingerprint: bytes
    key: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, key: _Optional[str] = ..., fingerprint: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReserveBatchRequest(_message.Message):
    __slots__ = ["items", "lease_ttl", "namespace", "owner"]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReserveBatchItem]
    lease_ttl: _duration_pb2.Duration
    namespace: str
    owner: str
    def __init__(self, namespace: _Optional[str] = ..., owner: _Optional[str] = ..., lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., items: _Optional[_Iterable[_Union[ReserveBatchItem, _Mapping]]] = ...) -> None: ...

class ReserveBatchResponse(_message.Message):
    __slots__ = ["results"]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ReserveBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ReserveBatchResult, _Mapping]]] = ...) -> None: ...

class ReserveBatchResult(_message.Message):
    __slots__ = ["error", "reserved"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    error: ItemError
    reserved: ReserveResponse
    def __init__(self, reserved: _Optional[_Union[ReserveResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ["fingerprint", "key", "lease_ttl", "metadata", "namespace", "owner", "wait_timeout"]
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    fingerprint: bytes
    key: str
    lease_ttl: _duration_pb2.Duration
    metadata: _containers.ScalarMap[str, str]
    namespace: str
    owner: str
    wait_timeout: _duration_pb2.Duration
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., owner: _Optional[str] = ..., lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., fingerprint: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., wait_timeout: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ["acquired", "completed", "failed", "in_progress"]
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    acquired: Acquired
    completed: Completed
    failed: Failed
    in_progress: InProgress
    def __init__(self, acquired: _Optional[_Union[Acquired, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., in_progress: _Optional[_Union[InProgress, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ...) -> None: ...

class WorkError(_message.Message):
    __slots__ = ["code", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
