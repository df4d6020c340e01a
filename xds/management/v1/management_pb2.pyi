import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListProxiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProxiesResponse(_message.Message):
    __slots__ = ("proxies", "sources", "quarantined")
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[Proxy]
    sources: _containers.RepeatedCompositeFieldContainer[SourceStatus]
    quarantined: _containers.RepeatedCompositeFieldContainer[QuarantinedResource]
    def __init__(self, proxies: _Optional[_Iterable[_Union[Proxy, _Mapping]]] = ..., sources: _Optional[_Iterable[_Union[SourceStatus, _Mapping]]] = ..., quarantined: _Optional[_Iterable[_Union[QuarantinedResource, _Mapping]]] = ...) -> None: ...

class QuarantinedResource(_message.Message):
    __slots__ = ("group", "type_url", "short_name", "name", "node_ids", "message", "serving", "nacked_at", "quarantined_at")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    SHORT_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    NACKED_AT_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_AT_FIELD_NUMBER: _ClassVar[int]
    group: str
    type_url: str
    short_name: str
    name: str
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    message: str
    serving: str
    nacked_at: _timestamp_pb2.Timestamp
    quarantined_at: _timestamp_pb2.Timestamp
    def __init__(self, group: _Optional[str] = ..., type_url: _Optional[str] = ..., short_name: _Optional[str] = ..., name: _Optional[str] = ..., node_ids: _Optional[_Iterable[str]] = ..., message: _Optional[str] = ..., serving: _Optional[str] = ..., nacked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., quarantined_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SourceStatus(_message.Message):
    __slots__ = ("name", "synced", "stale", "error", "last_sync", "registry")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    name: str
    synced: bool
    stale: bool
    error: str
    last_sync: _timestamp_pb2.Timestamp
    registry: RegistryStatus
    def __init__(self, name: _Optional[str] = ..., synced: _Optional[bool] = ..., stale: _Optional[bool] = ..., error: _Optional[str] = ..., last_sync: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., registry: _Optional[_Union[RegistryStatus, _Mapping]] = ...) -> None: ...

class RegistryStatus(_message.Message):
    __slots__ = ("kind", "outage_seconds", "failing_watches", "resync_grace_remaining_seconds", "seconds_since_answer")
    KIND_FIELD_NUMBER: _ClassVar[int]
    OUTAGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILING_WATCHES_FIELD_NUMBER: _ClassVar[int]
    RESYNC_GRACE_REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_ANSWER_FIELD_NUMBER: _ClassVar[int]
    kind: str
    outage_seconds: float
    failing_watches: int
    resync_grace_remaining_seconds: float
    seconds_since_answer: float
    def __init__(self, kind: _Optional[str] = ..., outage_seconds: _Optional[float] = ..., failing_watches: _Optional[int] = ..., resync_grace_remaining_seconds: _Optional[float] = ..., seconds_since_answer: _Optional[float] = ...) -> None: ...

class Proxy(_message.Message):
    __slots__ = ("stream_id", "node_id", "group", "peer", "method", "envoy_version", "connected_at", "types")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ENVOY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    node_id: str
    group: str
    peer: str
    method: str
    envoy_version: str
    connected_at: _timestamp_pb2.Timestamp
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    def __init__(self, stream_id: _Optional[int] = ..., node_id: _Optional[str] = ..., group: _Optional[str] = ..., peer: _Optional[str] = ..., method: _Optional[str] = ..., envoy_version: _Optional[str] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ...) -> None: ...

class TypeStatus(_message.Message):
    __slots__ = ("type_url", "short_name", "version_sent", "nonce_sent", "version_acked", "last_nack_message", "last_nack_version", "last_nack_at", "nack_count", "pushes", "last_nack_nonce")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    SHORT_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_SENT_FIELD_NUMBER: _ClassVar[int]
    NONCE_SENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_ACKED_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_AT_FIELD_NUMBER: _ClassVar[int]
    NACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    PUSHES_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_NONCE_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    short_name: str
    version_sent: str
    nonce_sent: str
    version_acked: str
    last_nack_message: str
    last_nack_version: str
    last_nack_at: _timestamp_pb2.Timestamp
    nack_count: int
    pushes: int
    last_nack_nonce: str
    def __init__(self, type_url: _Optional[str] = ..., short_name: _Optional[str] = ..., version_sent: _Optional[str] = ..., nonce_sent: _Optional[str] = ..., version_acked: _Optional[str] = ..., last_nack_message: _Optional[str] = ..., last_nack_version: _Optional[str] = ..., last_nack_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., nack_count: _Optional[int] = ..., pushes: _Optional[int] = ..., last_nack_nonce: _Optional[str] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class GetSnapshotResponse(_message.Message):
    __slots__ = ("group", "versions", "resources", "error")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    group: str
    versions: _containers.RepeatedCompositeFieldContainer[TypeVersion]
    resources: _containers.RepeatedCompositeFieldContainer[SnapshotResource]
    error: str
    def __init__(self, group: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[TypeVersion, _Mapping]]] = ..., resources: _Optional[_Iterable[_Union[SnapshotResource, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...

class TypeVersion(_message.Message):
    __slots__ = ("type_url", "version")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    version: str
    def __init__(self, type_url: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class SnapshotResource(_message.Message):
    __slots__ = ("type_url", "name", "version", "json")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    name: str
    version: str
    json: str
    def __init__(self, type_url: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ListLoadsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLoadsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointLoad]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[EndpointLoad, _Mapping]]] = ...) -> None: ...

class EndpointLoad(_message.Message):
    __slots__ = ("service", "address", "reported", "cpu_utilization", "memory_utilization", "utilization", "report_age_seconds", "source", "base_weight", "weight")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    REPORT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BASE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    service: str
    address: str
    reported: bool
    cpu_utilization: float
    memory_utilization: float
    utilization: float
    report_age_seconds: float
    source: str
    base_weight: int
    weight: int
    def __init__(self, service: _Optional[str] = ..., address: _Optional[str] = ..., reported: _Optional[bool] = ..., cpu_utilization: _Optional[float] = ..., memory_utilization: _Optional[float] = ..., utilization: _Optional[float] = ..., report_age_seconds: _Optional[float] = ..., source: _Optional[str] = ..., base_weight: _Optional[int] = ..., weight: _Optional[int] = ...) -> None: ...
