"""HTTP/3 codecs: aioquic's sans-IO QUIC and HTTP/3 cores, adapted to the
neutral event model (server side: requests in, responses out; client side:
the reverse)."""
