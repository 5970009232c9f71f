from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
ROLE_ADMIN: Role
ROLE_PLATFORM_ADMIN: Role
ROLE_READER: Role
ROLE_UNSPECIFIED: Role
ROLE_WORKER: Role

class CreateNamespaceRequest(_message.Message):
    __slots__ = ["name", "reason", "settings"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    settings: NamespaceSettings
    def __init__(self, name: _Optional[str] = ..., settings: _Optional[_Union[NamespaceSettings, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class CreateNamespaceResponse(_message.Message):
    __slots__ = ["namespace"]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: Namespace
    def __init__(self, namespace: _Optional[_Union[Namespace, _Mapping]] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ["description", "principal", "reason", "ttl"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    description: str
    principal: str
    reason: str
    ttl: _duration_pb2.Duration
    def __init__(self, principal: _Optional[str] = ..., description: _Optional[str] = ..., ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ["secret", "token"]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    secret: str
    token: Token
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ForceReleaseRequest(_message.Message):
    __slots__ = ["fencing_token", "key", "namespace", "reason"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    key: str
    namespace: str
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., reason: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class ForceReleaseResponse(_message.Message):
    __slots__ = ["already_released", "entry"]
    ALREADY_RELEASED_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    already_released: bool
    entry: _ledger_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_ledger_pb2.Entry, _Mapping]] = ..., already_released: bool = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ["key", "namespace", "page_size", "page_token"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    namespace: str
    page_size: int
    page_token: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ["events", "next_page_token"]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_ledger_pb2.Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_ledger_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetNamespaceRequest(_message.Message):
    __slots__ = ["name"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetNamespaceResponse(_message.Message):
    __slots__ = ["namespace", "usage"]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    namespace: Namespace
    usage: NamespaceUsage
    def __init__(self, namespace: _Optional[_Union[Namespace, _Mapping]] = ..., usage: _Optional[_Union[NamespaceUsage, _Mapping]] = ...) -> None: ...

class GrantRoleRequest(_message.Message):
    __slots__ = ["binding", "reason"]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    binding: RoleBinding
    reason: str
    def __init__(self, binding: _Optional[_Union[RoleBinding, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class GrantRoleResponse(_message.Message):
    __slots__ = ["binding"]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    binding: RoleBinding
    def __init__(self, binding: _Optional[_Union[RoleBinding, _Mapping]] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ["key_prefix", "namespace", "owner", "page_size", "page_token", "states", "stuck", "updated_after", "updated_before"]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    key_prefix: str
    namespace: str
    owner: str
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[_ledger_pb2.State]
    stuck: bool
    updated_after: _timestamp_pb2.Timestamp
    updated_before: _timestamp_pb2.Timestamp
    def __init__(self, namespace: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_ledger_pb2.State, str]]] = ..., owner: _Optional[str] = ..., key_prefix: _Optional[str] = ..., updated_after: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_before: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., stuck: bool = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ["entries", "next_page_token"]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_ledger_pb2.Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_ledger_pb2.Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ["end_time", "include_unsettled", "kinds", "namespace", "page_size", "page_token", "start_time"]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNSETTLED_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    end_time: _timestamp_pb2.Timestamp
    include_unsettled: bool
    kinds: _containers.RepeatedScalarFieldContainer[_ledger_pb2.EventKind]
    namespace: str
    page_size: int
    page_token: str
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, namespace: _Optional[str] = ..., start_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., kinds: _Optional[_Iterable[_Union[_ledger_pb2.EventKind, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_unsettled: bool = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ["events", "next_page_token", "settled_until"]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SETTLED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_ledger_pb2.Event]
    next_page_token: str
    settled_until: _timestamp_pb2.Timestamp
    def __init__(self, events: _Optional[_Iterable[_Union[_ledger_pb2.Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., settled_until: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ["page_size", "page_token"]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ["namespaces", "next_page_token"]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[Namespace]
    next_page_token: str
    def __init__(self, namespaces: _Optional[_Iterable[_Union[Namespace, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListRoleBindingsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListRoleBindingsResponse(_message.Message):
    __slots__ = ["bindings"]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    bindings: _containers.RepeatedCompositeFieldContainer[RoleBinding]
    def __init__(self, bindings: _Optional[_Iterable[_Union[RoleBinding, _Mapping]]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ["tokens"]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[Token, _Mapping]]] = ...) -> None: ...

class Namespace(_message.Message):
    __slots__ = ["created_at", "default_lease_ttl", "event_retention", "max_attempts", "max_held_leases", "max_lease_ttl", "max_result_bytes", "max_stored_bytes", "name", "retention", "updated_at"]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    EVENT_RETENTION_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_HELD_LEASES_FIELD_NUMBER: _ClassVar[int]
    MAX_LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    created_at: _timestamp_pb2.Timestamp
    default_lease_ttl: _duration_pb2.Duration
    event_retention: _duration_pb2.Duration
    max_attempts: int
    max_held_leases: int
    max_lease_ttl: _duration_pb2.Duration
    max_result_bytes: int
    max_stored_bytes: int
    name: str
    retention: _duration_pb2.Duration
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., default_lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_result_bytes: _Optional[int] = ..., retention: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_attempts: _Optional[int] = ..., event_retention: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_held_leases: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class NamespaceSettings(_message.Message):
    __slots__ = ["default_lease_ttl", "event_retention", "max_attempts", "max_held_leases", "max_lease_ttl", "max_result_bytes", "max_stored_bytes", "retention"]
    DEFAULT_LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    EVENT_RETENTION_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_HELD_LEASES_FIELD_NUMBER: _ClassVar[int]
    MAX_LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    default_lease_ttl: _duration_pb2.Duration
    event_retention: _duration_pb2.Duration
    max_attempts: int
    max_held_leases: int
    max_lease_ttl: _duration_pb2.Duration
    max_result_bytes: int
    max_stored_bytes: int
    retention: _duration_pb2.Duration
    def __init__(self, default_lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_lease_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_result_bytes: _Optional[int] = ..., retention: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_attempts: _Optional[int] = ..., event_retention: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_held_leases: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ...) -> None: ...

class NamespaceUsage(_message.Message):
    __slots__ = ["held_leases", "stored_bytes"]
    HELD_LEASES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    held_leases: int
    stored_bytes: int
    def __init__(self, held_leases: _Optional[int] = ..., stored_bytes: _Optional[int] = ...) -> None: ...

class PurgeExpiredRequest(_message.Message):
    __slots__ = ["namespace", "reason"]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PurgeExpiredResponse(_message.Message):
    __slots__ = ["purged_entries"]
    PURGED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    purged_entries: int
    def __init__(self, purged_entries: _Optional[int] = ...) -> None: ...

class ResetKeyRequest(_message.Message):
    __slots__ = ["fencing_token", "key", "namespace", "reason"]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    fencing_token: int
    key: str
    namespace: str
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ..., reason: _Optional[str] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class ResetKeyResponse(_message.Message):
    __slots__ = ["entry"]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: _ledger_pb2.Entry
    def __init__(self, entry: _Optional[_Union[_ledger_pb2.Entry, _Mapping]] = ...) -> None: ...

class RevokeRoleRequest(_message.Message):
    __slots__ = ["binding", "reason"]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    binding: RoleBinding
    reason: str
    def __init__(self, binding: _Optional[_Union[RoleBinding, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeRoleResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ["id", "reason"]
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ["token"]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: Token
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ...) -> None: ...

class RoleBinding(_message.Message):
    __slots__ = ["created_at", "created_by", "namespace_pattern", "principal", "role"]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_PATTERN_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    namespace_pattern: str
    principal: str
    role: Role
    def __init__(self, principal: _Optional[str] = ..., namespace_pattern: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ["created_at", "created_by", "description", "expires_at", "id", "last_used_at", "principal", "revoked_at", "revoked_by"]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    description: str
    expires_at: _timestamp_pb2.Timestamp
    id: str
    last_used_at: _timestamp_pb2.Timestamp
    principal: str
    revoked_at: _timestamp_pb2.Timestamp
    revoked_by: str
    def __init__(self, id: _Optional[str] = ..., principal: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., expires_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_by: _Optional[str] = ..., last_used_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateNamespaceRequest(_message.Message):
    __slots__ = ["name", "reason", "settings"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    settings: NamespaceSettings
    def __init__(self, name: _Optional[str] = ..., settings: _Optional[_Union[NamespaceSettings, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class UpdateNamespaceResponse(_message.Message):
    __slots__ = ["namespace"]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: Namespace
    def __init__(self, namespace: _Optional[_Union[Namespace, _Mapping]] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ["bindings", "principal"]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    bindings: _containers.RepeatedCompositeFieldContainer[RoleBinding]
    principal: str
    def __init__(self, principal: _Optional[str] = ..., bindings: _Optional[_Iterable[_Union[RoleBinding, _Mapping]]] = ...) -> None: ...

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
