"""Tests of the HTTP/3 codecs (expressgateway.codec.h3)."""
