"""Helpers of the deployment tests."""

from __future__ import annotations

import random
import socket


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 below the ephemeral range (32768)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")
