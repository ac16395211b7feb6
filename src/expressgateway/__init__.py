"""ExpressGateway: an L4 + L7 load balancer and reverse proxy."""

__version__ = "0.1.0"
