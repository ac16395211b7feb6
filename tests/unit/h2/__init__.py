"""Tests of the HTTP/2 codecs (expressgateway.codec.h2)."""
