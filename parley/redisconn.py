"""Redis clients for the different jobs Parley gives Redis (commands, blocking reads, pub/sub)."""
from __future__ import annotations

import redis


def client(url: str, *, blocking: bool = False, max_connections: int = 64) -> redis.Redis:
    """A client for `url`.

    redis-py 8 times sockets out after 5 s by default; a client that blocks on purpose (pub/sub
    listeners, waits on results) needs `blocking=True` so a quiet channel is not mistaken for a failure.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=None if blocking else 5,
        socket_connect_timeout=3,
        health_check_interval=30,
        max_connections=max_connections,
        decode_responses=True,
    )
