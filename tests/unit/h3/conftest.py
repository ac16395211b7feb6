"""Fixtures of the HTTP/3 codec tests: a server certificate (trustme) and
codecs joined in memory to real aioquic peers (see :mod:`.helpers`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.unit.h3.helpers import Cert, ClientPair, ServerPair


@pytest.fixture(scope="session")
def h3_cert(ca: trustme.CA) -> Cert:
    issued = ca.issue_cert("localhost", "example.com")
    return Cert(
        certificate=x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()),
        private_key=load_pem_private_key(issued.private_key_pem.bytes(), password=None),
    )


@pytest.fixture()
def make_pair(h3_cert: Cert) -> Callable[..., ServerPair]:
    """``make_pair(**codec_kw)``: an H3ServerCodec after the handshake with
    an aioquic client (``window=``, ``server_conf=``, ``client_conf=`` too)."""

    def make(**kw: Any) -> ServerPair:
        return ServerPair(h3_cert, **kw)

    return make


@pytest.fixture()
def pair(make_pair: Callable[..., ServerPair]) -> ServerPair:
    return make_pair()


@pytest.fixture()
def make_client_pair(h3_cert: Cert) -> Callable[..., ClientPair]:
    """``make_client_pair(**codec_kw)``: an H3ClientCodec after the handshake
    with an aioquic server."""

    def make(**kw: Any) -> ClientPair:
        return ClientPair(h3_cert, **kw)

    return make


@pytest.fixture()
def client_pair(make_client_pair: Callable[..., ClientPair]) -> ClientPair:
    return make_client_pair()
