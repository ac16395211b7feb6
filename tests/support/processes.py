"""Helper processes for tests: the Python origin, a TCP echo server, nginx."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.gateway import free_port, wait_port

HERE = Path(__file__).parent


@contextlib.contextmanager
def origin(tls: tuple[str, str] | None = None) -> Iterator[int]:
    """The edge-case HTTP origin (tests/support/origin.py) on a free port."""
    port = free_port()
    args = [sys.executable, str(HERE / "origin.py"), str(port)]
    if tls:
        args += ["--tls", *tls]
    proc = subprocess.Popen(args)
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


ECHO = r"""
import asyncio, sys
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
    def eof_received(self):
        self.t.write_eof()
        return True
async def main():
    s = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", int(sys.argv[1]))
    async with s: await s.serve_forever()
asyncio.run(main())
"""


@contextlib.contextmanager
def tcp_echo() -> Iterator[int]:
    """A TCP echo server that answers FIN with FIN (for half-close tests)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO, str(port)])
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        location = /hello {{ return 200 "hello from nginx\\n"; }}
        location /echo-headers {{ return 200 "xff=$http_x_forwarded_for proto=$http_x_forwarded_proto host=$http_host via=$http_via\\n"; }}
    }}
}}
"""


def nginx_binary() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(path):
        raise RuntimeError("nginx is not installed: run scripts/setup.sh --test (apt nginx-light)")
    return path


@contextlib.contextmanager
def run_nginx(
    conf_for: Callable[[str, int], str], files: dict[str, bytes] | None = None
) -> Iterator[int]:
    """Run a real nginx on a free port with ``conf_for(workdir, port)`` as its
    config and ``files`` in ``workdir/www``; stop it (and its pipes) after."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="eg-nginx-") as tmp:
        os.chmod(tmp, 0o755)  # nginx workers run as nobody when started as root
        www = Path(tmp) / "www"
        www.mkdir()
        os.chmod(www, 0o755)
        for name, data in (files or {}).items():
            (www / name).write_bytes(data)
            os.chmod(www / name, 0o644)
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(conf_for(tmp, port))
        proc = subprocess.Popen(
            [nginx_binary(), "-c", str(conf), "-p", tmp], stderr=subprocess.PIPE
        )
        try:
            wait_port(port)
            yield port
        finally:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            finally:
                assert proc.stderr is not None
                proc.stderr.close()


@contextlib.contextmanager
def nginx_origin(files: dict[str, bytes] | None = None) -> Iterator[int]:
    """A real nginx serving static files and a couple of fixed answers."""
    with run_nginx(lambda tmp, port: NGINX_CONF.format(dir=tmp, port=port), files) as port:
        yield port
