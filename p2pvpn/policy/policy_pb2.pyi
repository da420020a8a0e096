from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Rule(_message.Message):
    __slots__ = ("action", "from_group", "from_peer", "to_group", "to_peer", "proto", "port_first", "port_last")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    FROM_GROUP_FIELD_NUMBER: _ClassVar[int]
    FROM_PEER_FIELD_NUMBER: _ClassVar[int]
    TO_GROUP_FIELD_NUMBER: _ClassVar[int]
    TO_PEER_FIELD_NUMBER: _ClassVar[int]
    PROTO_FIELD_NUMBER: _ClassVar[int]
    PORT_FIRST_FIELD_NUMBER: _ClassVar[int]
    PORT_LAST_FIELD_NUMBER: _ClassVar[int]
    action: int
    from_group: str
    from_peer: bytes
    to_group: str
    to_peer: bytes
    proto: int
    port_first: int
    port_last: int
    def __init__(self, action: _Optional[int] = ..., from_group: _Optional[str] = ..., from_peer: _Optional[bytes] = ..., to_group: _Optional[str] = ..., to_peer: _Optional[bytes] = ..., proto: _Optional[int] = ..., port_first: _Optional[int] = ..., port_last: _Optional[int] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("network_id", "seq", "default_action", "rules", "issuer")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ACTION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    network_id: str
    seq: int
    default_action: int
    rules: _containers.RepeatedCompositeFieldContainer[Rule]
    issuer: bytes
    def __init__(self, network_id: _Optional[str] = ..., seq: _Optional[int] = ..., default_action: _Optional[int] = ..., rules: _Optional[_Iterable[_Union[Rule, _Mapping]]] = ..., issuer: _Optional[bytes] = ...) -> None: ...

class SignedPolicy(_message.Message):
    __slots__ = ("policy", "signature", "issuer_certificate")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ISSUER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    policy: bytes
    signature: bytes
    issuer_certificate: bytes
    def __init__(self, policy: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., issuer_certificate: _Optional[bytes] = ...) -> None: ...

class PolicyAnswer(_message.Message):
    __slots__ = ("status", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: int
    message: str
    def __init__(self, status: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
