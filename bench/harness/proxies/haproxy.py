"""HAProxy (Debian package) in HTTP and TCP mode."""

from __future__ import annotations

from ..settings import find_tool
from .base import (
    GRPC,
    H1,
    H2TLS,
    H2TLS_H2,
    H3,
    H3_H2,
    TCP,
    Context,
    Front,
    Proxy,
    first_line,
    render,
)


class HAProxy(Proxy):
    name = "haproxy"
    label = "haproxy"
    unsupported_kinds = {
        H3: "haproxy 2.6 from Debian is built without QUIC",
        H3_H2: "haproxy 2.6 from Debian is built without QUIC",
    }

    def available(self) -> str | None:
        return (
            None if find_tool("haproxy") else "haproxy is not installed (apt-get install haproxy)"
        )

    def version(self) -> str:
        return first_line(["haproxy", "-v"])

    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        bind_flags = ""
        server_flags = ""
        if front.kind in (H2TLS, H2TLS_H2, GRPC):
            bind_flags = f"ssl crt {ctx.certs.combined} alpn h2,http/1.1"
        if front.kind in (H2TLS_H2, GRPC):
            server_flags = "proto h2"
        if front.kind not in (H1, H2TLS, H2TLS_H2, GRPC, TCP):
            raise ValueError(front.kind)
        cfg = ctx.run_dir / "haproxy.cfg"
        cfg.write_text(
            render(
                "haproxy/haproxy.cfg",
                nbthread=f"nbthread {ctx.workers}" if ctx.workers else "",
                # The open-file limit here is 20000 and haproxy budgets 2 fds per
                # connection; idle client connections share a few pooled server ones.
                maxconn=10500 if front.big_idle else 8000,
                strict_limits="no strict-limits" if front.big_idle else "",
                mode="tcp" if front.kind == TCP else "http",
                host=front.host,
                port=front.port,
                bind_flags=bind_flags,
                backend=front.backend,
                server_flags=server_flags,
            )
        )
        return [find_tool("haproxy") or "haproxy", "-db", "-f", str(cfg)], {}
