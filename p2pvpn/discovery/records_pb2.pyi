from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RSA: _ClassVar[KeyType]
    Ed25519: _ClassVar[KeyType]
    Secp256k1: _ClassVar[KeyType]
    ECDSA: _ClassVar[KeyType]
RSA: KeyType
Ed25519: KeyType
Secp256k1: KeyType
ECDSA: KeyType

class Envelope(_message.Message):
    __slots__ = ("public_key", "payload_type", "payload", "signature")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    public_key: PublicKey
    payload_type: bytes
    payload: bytes
    signature: bytes
    def __init__(self, public_key: _Optional[_Union[PublicKey, _Mapping]] = ..., payload_type: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("type", "data")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    type: KeyType
    data: bytes
    def __init__(self, type: _Optional[_Union[KeyType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RelayRole(_message.Message):
    __slots__ = ("max_reservations", "max_circuits")
    MAX_RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_CIRCUITS_FIELD_NUMBER: _ClassVar[int]
    max_reservations: int
    max_circuits: int
    def __init__(self, max_reservations: _Optional[int] = ..., max_circuits: _Optional[int] = ...) -> None: ...

class ExitRole(_message.Message):
    __slots__ = ("allow", "deny", "capacity_mbit", "load_permille")
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_MBIT_FIELD_NUMBER: _ClassVar[int]
    LOAD_PERMILLE_FIELD_NUMBER: _ClassVar[int]
    allow: _containers.RepeatedScalarFieldContainer[str]
    deny: _containers.RepeatedScalarFieldContainer[str]
    capacity_mbit: int
    load_permille: int
    def __init__(self, allow: _Optional[_Iterable[str]] = ..., deny: _Optional[_Iterable[str]] = ..., capacity_mbit: _Optional[int] = ..., load_permille: _Optional[int] = ...) -> None: ...

class NodeRecord(_message.Message):
    __slots__ = ("peer_id", "network", "seq", "expires_unix", "ipv4", "ipv6", "address_index", "addrs", "relay_addrs", "relay", "exit", "certificate")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    IPV4_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_INDEX_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    RELAY_ADDRS_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    peer_id: bytes
    network: str
    seq: int
    expires_unix: int
    ipv4: bytes
    ipv6: bytes
    address_index: int
    addrs: _containers.RepeatedScalarFieldContainer[bytes]
    relay_addrs: _containers.RepeatedScalarFieldContainer[bytes]
    relay: RelayRole
    exit: ExitRole
    certificate: bytes
    def __init__(self, peer_id: _Optional[bytes] = ..., network: _Optional[str] = ..., seq: _Optional[int] = ..., expires_unix: _Optional[int] = ..., ipv4: _Optional[bytes] = ..., ipv6: _Optional[bytes] = ..., address_index: _Optional[int] = ..., addrs: _Optional[_Iterable[bytes]] = ..., relay_addrs: _Optional[_Iterable[bytes]] = ..., relay: _Optional[_Union[RelayRole, _Mapping]] = ..., exit: _Optional[_Union[ExitRole, _Mapping]] = ..., certificate: _Optional[bytes] = ...) -> None: ...
