"""Stream one large HTTP/1.1 POST (Content-Length) and read the response.

Standalone: `python upload_client.py HOST PORT PATH SIZE_BYTES`. Prints one JSON line:
{"requests": 1 or 0, "duration", "errors", "bytes", "status", "reply"}.
"""

from __future__ import annotations

import json
import socket
import sys
import time

BLOCK = b"\0" * (1 << 20)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("no response")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return status, body[:length]


def main(host: str, port: int, path: str, size: int) -> dict[str, object]:
    t0 = time.monotonic()
    sent = 0
    try:
        with socket.create_connection((host, port), timeout=120) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n".encode()
            )
            view = memoryview(BLOCK)
            while sent < size:
                n = min(len(BLOCK), size - sent)
                sock.sendall(view[:n])
                sent += n
            status, reply = read_response(sock)
    except OSError as exc:
        return {
            "requests": 0,
            "duration": time.monotonic() - t0,
            "errors": 1,
            "error_detail": [f"{type(exc).__name__}: {exc}"],
            "bytes": sent,
        }
    ok = status == 200 and reply.strip() == f"received={size}".encode()
    return {
        "requests": 1 if ok else 0,
        "duration": time.monotonic() - t0,
        "errors": 0 if ok else 1,
        "error_detail": [] if ok else [f"status {status} reply {reply[:80]!r}"],
        "bytes": sent,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
