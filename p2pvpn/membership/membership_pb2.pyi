from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Certificate(_message.Message):
    __slots__ = ("network_id", "peer_id", "name", "ipv4", "ipv6", "roles", "groups", "not_before", "not_after", "issuer")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IPV4_FIELD_NUMBER: _ClassVar[int]
    IPV6_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    network_id: str
    peer_id: bytes
    name: str
    ipv4: bytes
    ipv6: bytes
    roles: int
    groups: _containers.RepeatedScalarFieldContainer[str]
    not_before: int
    not_after: int
    issuer: bytes
    def __init__(self, network_id: _Optional[str] = ..., peer_id: _Optional[bytes] = ..., name: _Optional[str] = ..., ipv4: _Optional[bytes] = ..., ipv6: _Optional[bytes] = ..., roles: _Optional[int] = ..., groups: _Optional[_Iterable[str]] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., issuer: _Optional[bytes] = ...) -> None: ...

class SignedCertificate(_message.Message):
    __slots__ = ("certificate", "signature", "issuer_certificate")
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ISSUER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    signature: bytes
    issuer_certificate: SignedCertificate
    def __init__(self, certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., issuer_certificate: _Optional[_Union[SignedCertificate, _Mapping]] = ...) -> None: ...

class Revocation(_message.Message):
    __slots__ = ("peer_id", "not_before")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    peer_id: bytes
    not_before: int
    def __init__(self, peer_id: _Optional[bytes] = ..., not_before: _Optional[int] = ...) -> None: ...

class RevocationList(_message.Message):
    __slots__ = ("network_id", "seq", "revocations", "issuer")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    network_id: str
    seq: int
    revocations: _containers.RepeatedCompositeFieldContainer[Revocation]
    issuer: bytes
    def __init__(self, network_id: _Optional[str] = ..., seq: _Optional[int] = ..., revocations: _Optional[_Iterable[_Union[Revocation, _Mapping]]] = ..., issuer: _Optional[bytes] = ...) -> None: ...

class SignedRevocationList(_message.Message):
    __slots__ = ("revocation_list", "signature", "issuer_certificate")
    REVOCATION_LIST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ISSUER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    revocation_list: bytes
    signature: bytes
    issuer_certificate: SignedCertificate
    def __init__(self, revocation_list: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., issuer_certificate: _Optional[_Union[SignedCertificate, _Mapping]] = ...) -> None: ...

class Invite(_message.Message):
    __slots__ = ("network_id", "inviter", "addrs", "secret", "expires", "network_name")
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    INVITER_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_NAME_FIELD_NUMBER: _ClassVar[int]
    network_id: str
    inviter: bytes
    addrs: _containers.RepeatedScalarFieldContainer[bytes]
    secret: bytes
    expires: int
    network_name: str
    def __init__(self, network_id: _Optional[str] = ..., inviter: _Optional[bytes] = ..., addrs: _Optional[_Iterable[bytes]] = ..., secret: _Optional[bytes] = ..., expires: _Optional[int] = ..., network_name: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("invite_id", "proof", "renew")
    INVITE_ID_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    RENEW_FIELD_NUMBER: _ClassVar[int]
    invite_id: bytes
    proof: bytes
    renew: SignedCertificate
    def __init__(self, invite_id: _Optional[bytes] = ..., proof: _Optional[bytes] = ..., renew: _Optional[_Union[SignedCertificate, _Mapping]] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("status", "message", "certificate", "network_name", "bootstrap", "revocations")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_NAME_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_FIELD_NUMBER: _ClassVar[int]
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    status: int
    message: str
    certificate: SignedCertificate
    network_name: str
    bootstrap: _containers.RepeatedScalarFieldContainer[bytes]
    revocations: SignedRevocationList
    def __init__(self, status: _Optional[int] = ..., message: _Optional[str] = ..., certificate: _Optional[_Union[SignedCertificate, _Mapping]] = ..., network_name: _Optional[str] = ..., bootstrap: _Optional[_Iterable[bytes]] = ..., revocations: _Optional[_Union[SignedRevocationList, _Mapping]] = ...) -> None: ...

class Membership(_message.Message):
    __slots__ = ("certificate", "revocations")
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    certificate: SignedCertificate
    revocations: SignedRevocationList
    def __init__(self, certificate: _Optional[_Union[SignedCertificate, _Mapping]] = ..., revocations: _Optional[_Union[SignedRevocationList, _Mapping]] = ...) -> None: ...
