"""Session-ticket keys we choose, installed into ``ssl.SSLContext`` objects.

The stdlib ``ssl`` module cannot set ticket keys: left alone, OpenSSL seals
tickets with a random key of each context, so a ticket issued by one worker
cannot resume on another and the key never changes while the process
lives. This module reaches the context's ``SSL_CTX`` through ctypes, on the
very OpenSSL that ``_ssl`` is linked with, and installs a ticket-key
callback (``SSL_CTX_set_tlsext_ticket_key_cb``) that seals and opens
tickets with :class:`TicketKeys`: keys the supervisor mints, rotates and
sends to every worker (``runtime/tickets.py``).

A key is 80 bytes, nginx's ``ssl_session_ticket_key`` format: a 16-byte
name (sent in the clear at the front of every ticket, so a server knows
which key sealed it), a 32-byte HMAC-SHA256 key and a 32-byte AES-256-CBC
key (RFC 5077 §4's recommended ticket construction).

Nothing here may crash the gateway: when a symbol is missing or the
``SSL_CTX`` pointer does not check out, :func:`install` logs one warning
and returns ``False``; the context keeps OpenSSL's default keys.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("expressgateway.tls")

KEY_SIZE = 80
NAME_SIZE = 16
_SECRET_SIZE = 32

# <openssl/ssl.h>
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB = 72
_SSL_SESS_CACHE_OFF = 0x0
_SSL_SESS_CACHE_SERVER = 0x2
#: TLS 1.3 tickets sent after a full handshake (OpenSSL's default)
_DEFAULT_NUM_TICKETS = 2

#: where ``SSL_CTX *ctx`` sits in CPython's PySSLContext: right after PyObject_HEAD
_CTX_OFFSET = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)

#: int cb(SSL *s, unsigned char key_name[16], unsigned char *iv,
#:        EVP_CIPHER_CTX *cctx, HMAC_CTX *hctx, int enc)
_TICKET_CB = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int,
)


class _OpenSSL:
    """The few libssl/libcrypto functions we need, with their C signatures."""

    def __init__(self) -> None:
        import _ssl

        # dlopen of the already-loaded _ssl module gives its handle; dlsym on it
        # searches its dependencies: the libssl/libcrypto instance _ssl uses.
        lib = ctypes.CDLL(_ssl.__file__)
        vp, c_int, c_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        opts = ctypes.c_uint64 if ssl.OPENSSL_VERSION_INFO >= (3,) else ctypes.c_ulong
        self.get_options = _fn(lib, "SSL_CTX_get_options", opts, vp)
        self.get_verify_mode = _fn(lib, "SSL_CTX_get_verify_mode", c_int, vp)
        self.callback_ctrl = _fn(lib, "SSL_CTX_callback_ctrl", c_long, vp, c_int, _TICKET_CB)
        self.ctrl = _fn(lib, "SSL_CTX_ctrl", c_long, vp, c_int, c_long, vp)
        self.rand_bytes = _fn(lib, "RAND_bytes", c_int, vp, c_int)
        self.encrypt_init = _fn(lib, "EVP_EncryptInit_ex", c_int, vp, vp, vp, ctypes.c_char_p, vp)
        self.decrypt_init = _fn(lib, "EVP_DecryptInit_ex", c_int, vp, vp, vp, ctypes.c_char_p, vp)
        self.hmac_init = _fn(lib, "HMAC_Init_ex", c_int, vp, ctypes.c_char_p, c_int, vp, vp)
        self.aes_256_cbc: int = _fn(lib, "EVP_aes_256_cbc", vp)()
        self.sha256: int = _fn(lib, "EVP_sha256", vp)()


def _fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    fn = getattr(lib, name)  # AttributeError: the symbol is missing
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


_LIB: _OpenSSL | None = None
_LIB_ERROR: str | None = None
_warned = False


def _openssl() -> _OpenSSL | None:
    global _LIB, _LIB_ERROR
    if _LIB is None and _LIB_ERROR is None:
        try:
            _LIB = _OpenSSL()
        except (OSError, AttributeError, ImportError) as exc:
            _LIB_ERROR = f"OpenSSL functions not found: {exc}"
    return _LIB


def _warn(why: str) -> None:
    """One warning per process: every context after the first fails the same way."""
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "TLS session-ticket keys cannot be installed; OpenSSL's own per-process "
            "keys are used (no sharing across workers, no rotation)",
            extra={"reason": why},
        )


def ssl_ctx_pointer(ctx: object) -> int | None:
    """The ``SSL_CTX *`` of an ``ssl.SSLContext``, read from CPython's object
    layout (unchecked; :func:`install` checks it), or None."""
    import _ssl

    if not isinstance(ctx, _ssl._SSLContext):
        return None
    value = ctypes.c_void_p.from_address(id(ctx) + _CTX_OFFSET).value
    return int(value) if value else None


def _checked_pointer(
    ctx: ssl.SSLContext, lib: _OpenSSL, pointer: Callable[[object], int | None]
) -> int | None:
    """The pointer, if OpenSSL reports the same options and verify mode for
    it as Python does for ``ctx`` (so it really is this context's SSL_CTX)."""
    if not isinstance(ctx, ssl.SSLContext):
        return None
    ptr = pointer(ctx)
    if ptr is None:
        return None
    if lib.get_options(ptr) != int(ctx.options):
        return None
    if lib.get_verify_mode(ptr) != int(ctx.verify_mode):
        return None
    return ptr


class TicketKeys:
    """The ticket keys of one listener in one process: the first encrypts
    new tickets, all of them decrypt. :meth:`update` swaps the set (the
    supervisor sends a new one at each rotation); contexts that
    :meth:`install` the callback see the change at their next handshake."""

    def __init__(self, keys: Sequence[bytes] = ()) -> None:
        #: key name -> (hmac key, aes key)
        self._by_name: dict[bytes, tuple[bytes, bytes]] = {}
        self._current: tuple[bytes, bytes, bytes] | None = None
        self.update(keys)
        self._callback = _TICKET_CB(self._on_ticket)

    def update(self, keys: Sequence[bytes]) -> None:
        """New keys, current first. Each must be :data:`KEY_SIZE` bytes."""
        parsed = []
        for key in keys:
            if len(key) != KEY_SIZE:
                raise ValueError(f"a ticket key is {KEY_SIZE} bytes, got {len(key)}")
            parsed.append((key[:NAME_SIZE], key[NAME_SIZE:48], key[48:]))
        self._by_name = {name: (hmac, aes) for name, hmac, aes in parsed}
        self._current = parsed[0] if parsed else None

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:  # never the key material
        return f"<TicketKeys: {len(self)} keys>"

    def install(
        self, ctx: ssl.SSLContext, *, pointer: Callable[[object], int | None] = ssl_ctx_pointer
    ) -> bool:
        """Seal and open ``ctx``'s session tickets with these keys. ``False``
        (after one warning per process) when this Python's OpenSSL cannot be
        reached; ``ctx`` then keeps OpenSSL's default keys. ``pointer`` is a
        test hook."""
        lib = _openssl()
        if lib is None:
            _warn(_LIB_ERROR or "OpenSSL not found")
            return False
        ptr = _checked_pointer(ctx, lib, pointer)
        if ptr is None:
            _warn("the SSL_CTX of an ssl.SSLContext could not be found or verified")
            return False
        lib.callback_ctrl(ptr, _SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB, self._callback)
        # the callback (and so these keys) lives as long as the context
        ctx.eg_ticket_keys = self  # type: ignore[attr-defined]
        return True

    def _on_ticket(self, _ssl: int, name: int, iv: int, cctx: int, hctx: int, enc: int) -> int:
        """OpenSSL's ticket-key callback (runs inside a handshake, GIL re-taken).
        Encrypt: 1 = ticket sealed. Decrypt: 0 = unknown key (full handshake),
        1 = opened with the current key, 2 = opened with an older one (the
        client gets a fresh ticket)."""
        lib = _LIB
        try:
            if lib is None:
                return 0
            if enc:
                current = self._current
                if current is None:
                    return 0  # no key yet: no ticket
                key_name, hmac, aes = current
                ctypes.memmove(name, key_name, NAME_SIZE)
                if lib.rand_bytes(iv, 16) != 1:
                    return -1
                if lib.encrypt_init(cctx, lib.aes_256_cbc, None, aes, iv) != 1:
                    return -1
                if lib.hmac_init(hctx, hmac, _SECRET_SIZE, lib.sha256, None) != 1:
                    return -1
                return 1
            key_name = ctypes.string_at(name, NAME_SIZE)
            found = self._by_name.get(key_name)
            if found is None:
                return 0
            hmac, aes = found
            if lib.hmac_init(hctx, hmac, _SECRET_SIZE, lib.sha256, None) != 1:
                return -1
            if lib.decrypt_init(cctx, lib.aes_256_cbc, None, aes, iv) != 1:
                return -1
            current = self._current
            return 1 if current is not None and current[0] == key_name else 2
        except Exception:  # an exception must not cross into OpenSSL
            return 0


def set_session_tickets(ctx: ssl.SSLContext, enabled: bool) -> None:
    """Turn session resumption of a server context on (OpenSSL's defaults:
    tickets, and a per-process session cache for clients without ticket
    support) or off (no tickets, no cache: every handshake is full)."""
    if enabled:
        # not ``&= ~flag``: IntFlag's complement would drop unknown high bits
        ctx.options = ssl.Options(int(ctx.options) & ~int(ssl.OP_NO_TICKET))
        ctx.num_tickets = _DEFAULT_NUM_TICKETS
    else:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    lib = _openssl()
    ptr = _checked_pointer(ctx, lib, ssl_ctx_pointer) if lib is not None else None
    if lib is None or ptr is None:
        if not enabled:
            _warn("the session cache cannot be turned off")
        return
    mode = _SSL_SESS_CACHE_SERVER if enabled else _SSL_SESS_CACHE_OFF
    lib.ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, mode, None)
