"""mitmproxy (mitmdump in reverse mode) from its own venv, bench/.venv-mitm."""

from __future__ import annotations

from ..settings import MITM_VENV
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

MITMDUMP = MITM_VENV / "bin" / "mitmdump"


class Mitmproxy(Proxy):
    name = "mitmproxy"
    label = "mitmproxy"
    unsupported_kinds = {
        H2TLS_H2: "mitmproxy speaks HTTP/1.1 to a cleartext upstream (no h2c)",
        GRPC: "mitmproxy speaks HTTP/1.1 to a cleartext upstream (no h2c, no trailers)",
        H3: "mitmproxy's HTTP/3 reverse mode needs a TLS/QUIC upstream",
        H3_H2: "mitmproxy's HTTP/3 reverse mode needs a TLS/QUIC upstream",
    }

    def available(self) -> str | None:
        if MITMDUMP.exists():
            return None
        return f"mitmproxy is not installed ({MITM_VENV}/bin/pip install mitmproxy)"

    def version(self) -> str:
        return first_line([str(MITMDUMP), "--version"])

    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        if front.kind == TCP:
            target = f"tcp://{front.backend}"
        elif front.kind in (H1, H2TLS):
            # Reverse mode detects TLS from the client hello; the origin side is plain HTTP/1.1.
            target = f"http://{front.backend}"
        else:
            raise ValueError(front.kind)
        text = render(
            "mitmproxy/args.txt",
            mode_spec=f"reverse:{target}@{front.host}:{front.port}",
            run_dir=ctx.run_dir,
            combined=ctx.certs.combined,
        )
        args = [line for line in text.splitlines() if line and not line.startswith("#")]
        return [str(MITMDUMP), *args], {"HOME": str(ctx.run_dir)}
