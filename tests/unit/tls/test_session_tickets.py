"""Session-ticket keys installed through ctypes (``io/tickets.py``), on real
OpenSSL handshakes: a server ``ssl.SSLContext`` and a client one talk over
memory BIOs in-process, so a test sees exactly which handshake resumed.

Two server contexts with the same :class:`TicketKeys` stand for two
workers: a ticket from one must resume on the other.
"""

from __future__ import annotations

import logging
import os
import ssl

import pytest
import trustme

from expressgateway.io import tickets
from expressgateway.io.tickets import KEY_SIZE, TicketKeys, set_session_tickets, ssl_ctx_pointer

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost")


def server(cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    return ctx


def client(ca: trustme.CA, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def connect(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> ssl.SSLObject:
    """A whole handshake, then one application byte from the server (TLS 1.3
    tickets come after the handshake); the client's SSL object."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    cli = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    done = {"srv": False, "cli": False}
    for _ in range(10):
        for name, obj in (("cli", cli), ("srv", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "handshake did not finish"
    srv.write(b"!")
    c_in.write(s_out.read())
    assert cli.read(1) == b"!"
    assert cli.session_reused == srv.session_reused
    return cli


def saved_session(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> ssl.SSLSession:
    cli = connect(server_ctx, client_ctx)
    assert not cli.session_reused
    session = cli.session
    assert session is not None and session.has_ticket
    return session


def key() -> bytes:
    return os.urandom(KEY_SIZE)


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_a_ticket_from_one_context_resumes_on_another_with_the_same_keys(
    ca: trustme.CA, cert: trustme.LeafCert, version: ssl.TLSVersion
) -> None:
    keys = TicketKeys([key()])
    first, second = server(cert), server(cert)
    assert keys.install(first) and keys.install(second)
    cctx = client(ca, version)
    session = saved_session(first, cctx)
    resumed = connect(second, cctx, session)
    assert resumed.session_reused
    assert resumed.version() == ssl.TLSVersion(version).name.replace("v1_", "v1.")


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_without_shared_keys_another_context_makes_a_full_handshake(
    ca: trustme.CA, cert: trustme.LeafCert, version: ssl.TLSVersion
) -> None:
    """The control: OpenSSL's default keys are per context."""
    first, second = server(cert), server(cert)
    cctx = client(ca, version)
    session = saved_session(first, cctx)
    assert connect(first, cctx, session).session_reused
    assert not connect(second, cctx, session).session_reused


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_a_retired_key_still_opens_tickets_and_the_client_gets_a_fresh_one(
    ca: trustme.CA, cert: trustme.LeafCert, version: ssl.TLSVersion
) -> None:
    old, new = key(), key()
    keys = TicketKeys([old])
    ctx = server(cert)
    assert keys.install(ctx)
    cctx = client(ca, version)
    session = saved_session(ctx, cctx)
    keys.update([new, old])  # a rotation: `old` only decrypts now
    resumed = connect(ctx, cctx, session)
    assert resumed.session_reused
    fresh = resumed.session
    assert fresh is not None
    keys.update([key(), new])  # `old` dropped: the fresh ticket is sealed with `new`
    assert connect(ctx, cctx, fresh).session_reused


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_a_dropped_key_means_a_full_handshake_not_an_error(
    ca: trustme.CA, cert: trustme.LeafCert, version: ssl.TLSVersion
) -> None:
    old = key()
    keys = TicketKeys([old])
    ctx = server(cert)
    assert keys.install(ctx)
    cctx = client(ca, version)
    session = saved_session(ctx, cctx)
    keys.update([key()])
    again = connect(ctx, cctx, session)  # the handshake completes
    assert not again.session_reused
    assert again.session is not None and again.session.has_ticket


def test_keys_swapped_on_a_live_context_apply_to_the_next_handshake(
    ca: trustme.CA, cert: trustme.LeafCert
) -> None:
    """The worker updates one TicketKeys; contexts built earlier follow."""
    keys = TicketKeys([key()])
    a, b = server(cert), server(cert)
    assert keys.install(a) and keys.install(b)
    cctx = client(ca, ssl.TLSVersion.TLSv1_3)
    keys.update([key()])
    session = saved_session(a, cctx)
    assert connect(b, cctx, session).session_reused


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_session_tickets_off_means_no_ticket_and_no_resumption(
    ca: trustme.CA, cert: trustme.LeafCert, version: ssl.TLSVersion
) -> None:
    """Off turns the session cache off too: a TLS 1.2 client would otherwise
    resume by session ID from the context's cache."""
    ctx = server(cert)
    assert TicketKeys([key()]).install(ctx)
    set_session_tickets(ctx, False)
    cctx = client(ca, version)
    first = connect(ctx, cctx)
    assert first.session is None or not first.session.has_ticket
    assert not connect(ctx, cctx, first.session).session_reused
    set_session_tickets(ctx, True)  # a reload turns them back on
    assert connect(ctx, cctx, saved_session(ctx, cctx)).session_reused


def test_turning_tickets_back_on_keeps_every_other_option(cert: trustme.LeafCert) -> None:
    ctx = server(cert)
    before = int(ctx.options)
    set_session_tickets(ctx, False)
    assert ctx.options & ssl.OP_NO_TICKET and ctx.num_tickets == 0
    set_session_tickets(ctx, True)
    assert int(ctx.options) == before and ctx.num_tickets == 2


def test_a_context_whose_pointer_does_not_check_out_gets_no_callback(
    ca: trustme.CA, cert: trustme.LeafCert, caplog: pytest.LogCaptureFixture
) -> None:
    """The pointer check: OpenSSL must report the options and verify mode
    Python reports for the context. Here the hook hands over another
    context's SSL_CTX (a client one: CERT_REQUIRED), as a wrong offset
    into a future CPython's object layout might."""
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx = server(cert)
    keys = TicketKeys([key()])
    caplog.set_level(logging.WARNING, logger="expressgateway.tls")
    tickets._warned = False
    try:
        assert not keys.install(ctx, pointer=lambda _ctx: ssl_ctx_pointer(other))
        assert not keys.install(ctx, pointer=lambda _ctx: None)
        assert not keys.install("not a context")  # type: ignore[arg-type]
    finally:
        tickets._warned = False
    warnings = [r for r in caplog.records if r.name == "expressgateway.tls"]
    assert len(warnings) == 1  # once per process, not per context
    assert "cannot be installed" in warnings[0].getMessage()
    # ctx still works with OpenSSL's own keys: tickets resume on ctx only
    cctx = client(ca, ssl.TLSVersion.TLSv1_3)
    session = saved_session(ctx, cctx)
    assert connect(ctx, cctx, session).session_reused
    shared = server(cert)
    assert keys.install(shared)
    assert not connect(shared, cctx, session).session_reused


def test_the_pointer_is_the_contexts_ssl_ctx(cert: trustme.LeafCert) -> None:
    a, b = server(cert), server(cert)
    pa, pb = ssl_ctx_pointer(a), ssl_ctx_pointer(b)
    assert pa and pb and pa != pb
    assert ssl_ctx_pointer(a) == pa  # stable
    assert ssl_ctx_pointer(object()) is None


def test_keys_must_be_80_bytes_and_never_show_in_repr() -> None:
    with pytest.raises(ValueError, match="80 bytes"):
        TicketKeys([b"short"])
    k = key()
    keys = TicketKeys([k])
    assert k.hex() not in repr(keys) and repr(k) not in repr(keys)
    assert len(keys) == 1
