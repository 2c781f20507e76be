from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_GRADIENT: _ClassVar[Phase]
    PHASE_AGREEMENT: _ClassVar[Phase]
    PHASE_MODEL: _ClassVar[Phase]

class RejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_REASON_UNSPECIFIED: _ClassVar[RejectReason]
    REJECT_REASON_MALFORMED: _ClassVar[RejectReason]
    REJECT_REASON_TOO_LARGE: _ClassVar[RejectReason]
    REJECT_REASON_UNKNOWN_SENDER: _ClassVar[RejectReason]
    REJECT_REASON_BAD_SIGNATURE: _ClassVar[RejectReason]
    REJECT_REASON_SENDER_MISMATCH: _ClassVar[RejectReason]
    REJECT_REASON_WRONG_RUN: _ClassVar[RejectReason]
    REJECT_REASON_STALE: _ClassVar[RejectReason]
    REJECT_REASON_TOO_FAR_AHEAD: _ClassVar[RejectReason]
    REJECT_REASON_BAD_PHASE: _ClassVar[RejectReason]
    REJECT_REASON_BAD_ROUND: _ClassVar[RejectReason]
    REJECT_REASON_BAD_LENGTH: _ClassVar[RejectReason]
    REJECT_REASON_NON_FINITE: _ClassVar[RejectReason]
    REJECT_REASON_DUPLICATE: _ClassVar[RejectReason]
    REJECT_REASON_EQUIVOCATION: _ClassVar[RejectReason]
    REJECT_REASON_SELF: _ClassVar[RejectReason]
    REJECT_REASON_NON_CANONICAL: _ClassVar[RejectReason]
PHASE_UNSPECIFIED: Phase
PHASE_GRADIENT: Phase
PHASE_AGREEMENT: Phase
PHASE_MODEL: Phase
REJECT_REASON_UNSPECIFIED: RejectReason
REJECT_REASON_MALFORMED: RejectReason
REJECT_REASON_TOO_LARGE: RejectReason
REJECT_REASON_UNKNOWN_SENDER: RejectReason
REJECT_REASON_BAD_SIGNATURE: RejectReason
REJECT_REASON_SENDER_MISMATCH: RejectReason
REJECT_REASON_WRONG_RUN: RejectReason
REJECT_REASON_STALE: RejectReason
REJECT_REASON_TOO_FAR_AHEAD: RejectReason
REJECT_REASON_BAD_PHASE: RejectReason
REJECT_REASON_BAD_ROUND: RejectReason
REJECT_REASON_BAD_LENGTH: RejectReason
REJECT_REASON_NON_FINITE: RejectReason
REJECT_REASON_DUPLICATE: RejectReason
REJECT_REASON_EQUIVOCATION: RejectReason
REJECT_REASON_SELF: RejectReason
REJECT_REASON_NON_CANONICAL: RejectReason

class RoundMessage(_message.Message):
    __slots__ = ("run_id", "iteration", "phase", "round", "sender", "length", "vector")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    run_id: bytes
    iteration: int
    phase: Phase
    round: int
    sender: int
    length: int
    vector: bytes
    def __init__(self, run_id: _Optional[bytes] = ..., iteration: _Optional[int] = ..., phase: _Optional[_Union[Phase, str]] = ..., round: _Optional[int] = ..., sender: _Optional[int] = ..., length: _Optional[int] = ..., vector: _Optional[bytes] = ...) -> None: ...

class SignedMessage(_message.Message):
    __slots__ = ("sender", "body", "signature")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sender: int
    body: bytes
    signature: bytes
    def __init__(self, sender: _Optional[int] = ..., body: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: RejectReason
    def __init__(self, reason: _Optional[_Union[RejectReason, str]] = ...) -> None: ...

class ReadAuth(_message.Message):
    __slots__ = ("reader", "issued_ms", "signature")
    READER_FIELD_NUMBER: _ClassVar[int]
    ISSUED_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    reader: int
    issued_ms: int
    signature: bytes
    def __init__(self, reader: _Optional[int] = ..., issued_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("run_id", "iteration", "phase", "round", "senders", "auth")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SENDERS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    run_id: bytes
    iteration: int
    phase: Phase
    round: int
    senders: _containers.RepeatedScalarFieldContainer[int]
    auth: ReadAuth
    def __init__(self, run_id: _Optional[bytes] = ..., iteration: _Optional[int] = ..., phase: _Optional[_Union[Phase, str]] = ..., round: _Optional[int] = ..., senders: _Optional[_Iterable[int]] = ..., auth: _Optional[_Union[ReadAuth, _Mapping]] = ...) -> None: ...

class PullReply(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[SignedMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[SignedMessage, _Mapping]]] = ...) -> None: ...

class DeliverReply(_message.Message):
    __slots__ = ("received", "accepted")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    received: int
    accepted: int
    def __init__(self, received: _Optional[int] = ..., accepted: _Optional[int] = ...) -> None: ...

class EvidenceRequest(_message.Message):
    __slots__ = ("auth",)
    AUTH_FIELD_NUMBER: _ClassVar[int]
    auth: ReadAuth
    def __init__(self, auth: _Optional[_Union[ReadAuth, _Mapping]] = ...) -> None: ...

class Equivocation(_message.Message):
    __slots__ = ("first", "second")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    first: SignedMessage
    second: SignedMessage
    def __init__(self, first: _Optional[_Union[SignedMessage, _Mapping]] = ..., second: _Optional[_Union[SignedMessage, _Mapping]] = ...) -> None: ...

class EvidenceReply(_message.Message):
    __slots__ = ("equivocations",)
    EQUIVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    equivocations: _containers.RepeatedCompositeFieldContainer[Equivocation]
    def __init__(self, equivocations: _Optional[_Iterable[_Union[Equivocation, _Mapping]]] = ...) -> None: ...

class ReportReply(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("auth",)
    AUTH_FIELD_NUMBER: _ClassVar[int]
    auth: ReadAuth
    def __init__(self, auth: _Optional[_Union[ReadAuth, _Mapping]] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("run_id", "peer_id", "iteration", "finished", "rejected", "accepted")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    run_id: bytes
    peer_id: int
    iteration: int
    finished: bool
    rejected: _containers.ScalarMap[str, int]
    accepted: int
    def __init__(self, run_id: _Optional[bytes] = ..., peer_id: _Optional[int] = ..., iteration: _Optional[int] = ..., finished: _Optional[bool] = ..., rejected: _Optional[_Mapping[str, int]] = ..., accepted: _Optional[int] = ...) -> None: ...
