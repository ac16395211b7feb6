"""Benchmark harness: expressgateway against the proxies users would pick instead."""
