"""How a stream gets a back for an endpoint, per backend protocol.

``take`` is synchronous (a pooled connection, or a new stream on a live
multiplexed connection); ``connect`` opens a new connection. HTTP/2 and HTTP/3
connections are shared (multiplexed) per peer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.pool import Pool, open_connection, peer_key

if TYPE_CHECKING:
    from expressgateway.proxy.context import L7Context
    from expressgateway.proxy.h1back import H1Back
    from expressgateway.proxy.interfaces import Back


class Connector(Protocol):
    def take(self, ctx: L7Context, ep: Endpoint) -> Back | None: ...

    async def connect(self, ctx: L7Context, ep: Endpoint) -> Back: ...


class H1Connector:
    def take(self, ctx: L7Context, ep: Endpoint) -> H1Back | None:
        conn = ctx.pool.take(peer_key(ep))
        if conn is None:
            return None
        from expressgateway.proxy.h1back import H1Back

        assert isinstance(conn, H1Back)
        conn.reused = True
        return conn

    async def connect(self, ctx: L7Context, ep: Endpoint) -> H1Back:
        from expressgateway.proxy.h1back import H1Back

        pool: Pool = ctx.pool
        ssl_ctx = pool.ssl_context(ep) if ep.tls else None
        key = peer_key(ep)
        proto = await open_connection(lambda: H1Back(ctx, key), ep, ssl_ctx, ctx.connect_timeout)
        Pool.count_new()
        assert isinstance(proto, H1Back)
        if proto.transport is not None:
            proto.endpoint = ep
            ep.connections += 1
        return proto


_H1 = H1Connector()
CONNECTORS: dict[str, Connector] = {"tcp": _H1, "h1": _H1}


def _register_h2() -> None:
    from expressgateway.proxy.h2back import H2Connector

    CONNECTORS["h2"] = H2Connector()


def _register_h3() -> None:
    from expressgateway.proxy.h3back import H3Connector

    CONNECTORS["h3"] = H3Connector()


_register_h2()
_register_h3()


def connector_for(ep: Endpoint) -> Connector:
    return CONNECTORS.get(ep.protocol, _H1)
