"""Imports every protocol's listener builder so it registers itself.

Import ``BUILDERS`` from here, not from ``runtime.listeners``, to see them all.
"""

from __future__ import annotations

import expressgateway.proxy.h1listener
import expressgateway.proxy.h2front
import expressgateway.proxy.h3back
import expressgateway.proxy.h3listener
import expressgateway.proxy.websocket  # noqa: F401
from expressgateway.runtime.listeners import BUILDERS

__all__ = ["BUILDERS"]
