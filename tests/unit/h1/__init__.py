"""Tests of the HTTP/1.1 codecs (expressgateway.codec.h1) and core.headers."""
