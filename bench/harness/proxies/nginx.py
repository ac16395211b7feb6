"""nginx (Debian package) as a reverse proxy / L4 stream proxy."""

from __future__ import annotations

from pathlib import Path

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

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


class Nginx(Proxy):
    name = "nginx"
    label = "nginx"
    unsupported_kinds = {
        H3: "nginx 1.22 has no HTTP/3",
        H3_H2: "nginx 1.22 has no HTTP/3 (nor HTTP proxying to an HTTP/2 upstream)",
        H2TLS_H2: "nginx cannot proxy HTTP to an HTTP/2 upstream (only grpc_pass)",
    }

    def available(self) -> str | None:
        return (
            None if find_tool("nginx") else "nginx is not installed (apt-get install nginx-light)"
        )

    def unsupported(self, kind: str) -> str | None:
        if kind == TCP and not STREAM_MODULE.exists():
            return "nginx stream module missing (apt-get install libnginx-mod-stream)"
        return super().unsupported(kind)

    def version(self) -> str:
        return first_line(["nginx", "-v"])

    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        workers = ctx.workers if ctx.workers else "auto"
        conf = ctx.run_dir / "nginx.conf"
        conf.write_text(
            render(
                "nginx/main.conf",
                workers=workers,
                run_dir=ctx.run_dir,
                load_modules=f"load_module {STREAM_MODULE};" if front.kind == TCP else "",
                body=self._body(front, ctx),
            )
        )
        return [find_tool("nginx") or "nginx", "-p", str(ctx.run_dir), "-c", str(conf)], {}

    def _body(self, front: Front, ctx: Context) -> str:
        if front.kind == TCP:
            return render(
                "nginx/stream.conf", host=front.host, port=front.port, backend=front.backend
            )
        tls = ""
        flags = ""
        if front.kind in (H2TLS, GRPC):
            flags = "ssl http2"
            tls = (
                f"ssl_certificate {ctx.certs.cert};\n        "
                f"ssl_certificate_key {ctx.certs.key};\n        "
                "ssl_session_cache shared:SSL:10m;"
            )
        elif front.kind != H1:
            raise ValueError(front.kind)
        pass_directive = render(
            "nginx/pass-grpc.conf" if front.kind == GRPC else "nginx/pass-http.conf"
        )
        return render(
            "nginx/http.conf",
            run_dir=ctx.run_dir,
            backend=front.backend,
            host=front.host,
            port=front.port,
            listen_flags=flags,
            tls=tls,
            pass_directive=pass_directive,
        )
