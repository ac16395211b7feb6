"""Imports every protocol's listener builder so it registers itself.

Import ``BUILDERS`` from here, not from ``runtime.listeners``, to see them all.
"""

from __future__ import annotations

import expressgateway.proxy.h1listener
import expressgateway.proxy.h3listener  # noqa: F401  (registers quic)
from expressgateway.runtime.listeners import BUILDERS

__all__ = ["BUILDERS"]
