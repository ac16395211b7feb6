"""The ``udp`` listener: per-client flows to a UDP backend, an idle reaper
and a bounded flow table. The backend answers ``<source port>|<payload>``,
so each reply names the gateway socket (flow) the datagram came from."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from tests.support.gateway import free_port, gateway
from tests.support.l4 import UdpEcho, config, listener, poll


def udp_listener(
    port: int, backend: int, udp: str = "", backend_protocol: str | None = None
) -> str:
    extra = f"\n[listeners.udp]\n{udp}\n" if udp else ""
    return listener(
        "udp-in", port, "udp", [backend], backend_protocol=backend_protocol, extra=extra
    )


@contextlib.contextmanager
def udp_client(timeout: float = 5.0) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        yield s


def exchange(client: socket.socket, port: int, payload: bytes) -> tuple[int, bytes]:
    """Send one datagram through the gateway; (flow port, echoed payload)."""
    client.sendto(payload, ("127.0.0.1", port))
    data, sender = client.recvfrom(65535)
    assert sender == ("127.0.0.1", port), "the reply must come from the listener's address"
    flow, _, echoed = data.partition(b"|")
    return int(flow), echoed


def test_udp_listener_relays_datagrams_and_replies_to_the_sender() -> None:
    admin, port = free_port(), free_port(udp=True)
    with UdpEcho() as echo:
        cfg = config(admin, udp_listener(port, echo.port, backend_protocol="udp"))
        with gateway(cfg, admin_port=admin) as gw, udp_client() as c:
            for i in range(5):
                _, echoed = exchange(c, port, b"datagram %d" % i)
                assert echoed == b"datagram %d" % i
            assert (
                gw.metric("udp_datagrams_total", listener="udp-in", direction="client_to_backend")
                == 5
            )
            assert (
                gw.metric("udp_datagrams_total", listener="udp-in", direction="backend_to_client")
                == 5
            )
            assert gw.metric("udp_flows", listener="udp-in") == 1


def test_udp_listener_gives_each_client_its_own_flow() -> None:
    admin, port = free_port(), free_port(udp=True)
    with UdpEcho() as echo:
        cfg = config(admin, udp_listener(port, echo.port))
        with gateway(cfg, admin_port=admin) as gw, udp_client() as a, udp_client() as b:
            flows_a, flows_b = set(), set()
            for i in range(3):
                a.sendto(b"from a %d" % i, ("127.0.0.1", port))
                b.sendto(b"from b %d" % i, ("127.0.0.1", port))
                flow_a, data_a = a.recvfrom(65535)[0].split(b"|", 1)
                flow_b, data_b = b.recvfrom(65535)[0].split(b"|", 1)
                assert data_a == b"from a %d" % i  # each client gets only its own replies
                assert data_b == b"from b %d" % i
                flows_a.add(flow_a)
                flows_b.add(flow_b)
            # one stable upstream socket per client, different between clients
            assert len(flows_a) == len(flows_b) == 1
            assert flows_a != flows_b
            assert len(echo.peers) == 2
            assert gw.metric("udp_flows", listener="udp-in") == 2


def test_udp_listener_reaps_idle_flows() -> None:
    admin, port = free_port(), free_port(udp=True)
    with UdpEcho() as echo:
        cfg = config(admin, udp_listener(port, echo.port, udp="idle_timeout_ms = 300"))
        with gateway(cfg, admin_port=admin) as gw, udp_client() as c:
            first_flow, _ = exchange(c, port, b"hello")
            assert gw.metric("udp_flows", listener="udp-in") == 1
            assert poll(lambda: gw.metric("udp_flows", listener="udp-in") == 0, timeout=5)
            # the same client starts a fresh flow (a new upstream socket)
            second_flow, echoed = exchange(c, port, b"again")
            assert echoed == b"again"
            assert second_flow != first_flow
            assert gw.metric("udp_flows_total", listener="udp-in") == 2


def test_udp_listener_drops_new_flows_over_the_cap_and_counts_them() -> None:
    admin, port = free_port(), free_port(udp=True)
    with UdpEcho() as echo:
        cfg = config(admin, udp_listener(port, echo.port, udp="max_flows = 1"))
        with gateway(cfg, admin_port=admin) as gw, udp_client() as a, udp_client(timeout=1.0) as b:
            assert exchange(a, port, b"first")[1] == b"first"
            b.sendto(b"second", ("127.0.0.1", port))
            assert poll(
                lambda: (
                    gw.metric("udp_drops_total", listener="udp-in", reason="flow_table_full") == 1
                )
            )
            try:
                reply = b.recv(65535)
            except TimeoutError:
                reply = None
            assert reply is None, "a client over the flow cap must get nothing back"
            assert len(echo.peers) == 1
            # the existing flow is untouched
            assert exchange(a, port, b"still mine")[1] == b"still mine"
            assert gw.metric("udp_flows", listener="udp-in") == 1


def test_udp_listener_drops_datagrams_over_max_datagram_size() -> None:
    """``max_datagram_size``: larger datagrams are dropped (and counted), not relayed."""
    admin, port = free_port(), free_port(udp=True)
    with UdpEcho() as echo:
        cfg = config(admin, udp_listener(port, echo.port, udp="max_datagram_size = 512"))
        with gateway(cfg, admin_port=admin) as gw, udp_client(timeout=1.0) as c:
            assert exchange(c, port, b"x" * 512)[1] == b"x" * 512
            c.sendto(b"y" * 513, ("127.0.0.1", port))
            assert poll(lambda: gw.metric("udp_drops_total", listener="udp-in") == 1), (
                "an oversized datagram was not counted as dropped"
            )
            try:
                reply = c.recv(65535)
            except TimeoutError:
                reply = None
            assert reply is None, "an oversized datagram was relayed"


def test_udp_listener_forgets_flow_when_backend_is_unreachable() -> None:
    """ICMP port unreachable from the backend ends the flow and is counted;
    the listener keeps serving."""
    admin, port = free_port(), free_port(udp=True)
    dead = free_port(udp=True)  # nothing listens: the kernel answers ICMP unreachable
    cfg = config(admin, udp_listener(port, dead))
    with gateway(cfg, admin_port=admin) as gw, udp_client(timeout=1.0) as c:
        c.sendto(b"anyone?", ("127.0.0.1", port))
        assert poll(
            lambda: gw.metric("udp_drops_total", listener="udp-in", reason="backend_error") >= 1
        )
        assert poll(lambda: gw.metric("udp_flows", listener="udp-in") == 0)
