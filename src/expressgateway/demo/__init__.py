"""The built-in demo: a config and an origin."""
