from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("version", "network", "ipv4", "ipv6", "mtu", "capabilities", "address_index", "certificate")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    IPV4_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_INDEX_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    version: int
    network: str
    ipv4: bytes
    ipv6: bytes
    mtu: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    address_index: int
    certificate: bytes
    def __init__(self, version: _Optional[int] = ..., network: _Optional[str] = ..., ipv4: _Optional[bytes] = ..., ipv6: _Optional[bytes] = ..., mtu: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., address_index: _Optional[int] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class Data(_message.Message):
    __slots__ = ("packets", "offload_packets")
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_PACKETS_FIELD_NUMBER: _ClassVar[int]
    packets: _containers.RepeatedScalarFieldContainer[bytes]
    offload_packets: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, packets: _Optional[_Iterable[bytes]] = ..., offload_packets: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Keepalive(_message.Message):
    __slots__ = ("seq", "reply")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    seq: int
    reply: bool
    def __init__(self, seq: _Optional[int] = ..., reply: _Optional[bool] = ...) -> None: ...

class Close(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class DatagramOffer(_message.Message):
    __slots__ = ("epoch", "public_key", "receiver_index", "port", "endpoints")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_INDEX_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    public_key: bytes
    receiver_index: int
    port: int
    endpoints: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, epoch: _Optional[int] = ..., public_key: _Optional[bytes] = ..., receiver_index: _Optional[int] = ..., port: _Optional[int] = ..., endpoints: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("hello", "data", "keepalive", "close", "datagram_offer")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    DATAGRAM_OFFER_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    data: Data
    keepalive: Keepalive
    close: Close
    datagram_offer: DatagramOffer
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., data: _Optional[_Union[Data, _Mapping]] = ..., keepalive: _Optional[_Union[Keepalive, _Mapping]] = ..., close: _Optional[_Union[Close, _Mapping]] = ..., datagram_offer: _Optional[_Union[DatagramOffer, _Mapping]] = ...) -> None: ...
