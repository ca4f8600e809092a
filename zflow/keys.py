"""CURVE keys of a topology run beyond one machine: `zflow keys FILE -o DIR` writes them, the
coordinator and the replicas read them.

One keypair for the coordinator, one per node and one for the data sockets (used with
`security: {curve: true}`), as ZeroMQ certificate files
(`zmq.auth.create_certificates`): `NAME.key` holds the public key, `NAME.key_secret` both keys
(mode 0600). A node's key is shared by its replicas; the coordinator checks that the key a
connection authenticated with belongs to the node its identity claims, so one node's secret
cannot speak for another node.
"""

from __future__ import annotations

import os

from zflow.records import record

COORDINATOR = "coordinator"
#: the data sockets' keypair (`security: {curve: true}`), shared by every replica of the run
DATA = "data"


class KeyFileError(Exception):
    """Keys missing or unreadable; the message says which file and what to do."""


@record
class Keys:
    public: bytes
    secret: bytes
    #: node name → public key (z85 text), the allow-list of the coordinator
    nodes: dict[str, str]
    #: the coordinator's public key (what a replica checks the server against)
    server: bytes


def generate(directory: str, nodes: list[str]) -> list[str]:
    """Write the coordinator's and each node's keypair into `directory` (created 0700), keeping
    keys that exist already; the names of the files written."""
    import zmq.auth

    os.makedirs(directory, mode=0o700, exist_ok=True)
    written = []
    for name in [COORDINATOR, DATA, *nodes]:
        if os.path.exists(os.path.join(directory, f"{name}.key_secret")):
            continue
        old = os.umask(0o077)
        try:
            pub, sec = zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old)
        os.chmod(sec, 0o600)
        written += [pub, sec]
    return written


def _load(path: str, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not os.path.isfile(path):
        raise KeyFileError(f"{path}: no such key file (make the keys with "
                           "`zflow keys FILE -o DIR`)")
    try:
        pub, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{path}: not a ZeroMQ certificate ({e})") from None
    if secret and sec is None:
        raise KeyFileError(f"{path}: holds no secret key")
    return pub, sec


def for_coordinator(directory: str, nodes: list[str]) -> Keys:
    """The coordinator's keypair and every node's public key."""
    pub, sec = _load(os.path.join(directory, f"{COORDINATOR}.key_secret"), True)
    allowed = {n: _load(os.path.join(directory, f"{n}.key"), False)[0].decode()
               for n in nodes}
    assert sec is not None
    return Keys(pub, sec, allowed, pub)


def for_replica(directory: str, node: str) -> Keys:
    """A node's keypair and the coordinator's public key."""
    pub, sec = _load(os.path.join(directory, f"{node}.key_secret"), True)
    server, _ = _load(os.path.join(directory, f"{COORDINATOR}.key"), False)
    assert sec is not None
    return Keys(pub, sec, {}, server)


def data_key(directory: str) -> dict[str, str]:
    """The data sockets' keypair (z85), as a ReplicaSpec carries it."""
    pub, sec = _load(os.path.join(directory, f"{DATA}.key_secret"), True)
    assert sec is not None
    return {"public": pub.decode(), "secret": sec.decode()}
