from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class LoadReport(_message.Message):
    __slots__ = ("address", "cpu_utilization", "memory_utilization")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    address: str
    cpu_utilization: float
    memory_utilization: float
    def __init__(self, address: _Optional[str] = ..., cpu_utilization: _Optional[float] = ..., memory_utilization: _Optional[float] = ...) -> None: ...

class ReportReply(_message.Message):
    __slots__ = ("accepted", "rejected", "last_rejection")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_REJECTION_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: int
    last_rejection: str
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[int] = ..., last_rejection: _Optional[str] = ...) -> None: ...
