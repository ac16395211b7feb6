"""Tests of expressgateway.config."""
