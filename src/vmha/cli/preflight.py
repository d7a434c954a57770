"""What `vmha serve` binds before any work starts: the API's TCP socket and
the heartbeat receiver's UDP socket.

Binding first means a port in use is one clear line (exit 1) before the
store is opened or migrated and before the engine runs, and a controller
that starts is reachable at once (uvicorn and the heartbeat receiver take
the bound sockets). Configuration problems (exit 2) are found earlier
still, by `vmha.config.load_settings` and `build_controller`'s key check.
Called by `vmha.cli.server.serve` only.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from vmha.cli.client import CliError
from vmha.config import Settings


@dataclass
class Sockets:
    api: socket.socket
    heartbeat: socket.socket | None

    def close(self) -> None:
        for sock in (self.api, self.heartbeat):
            if sock is not None:
                sock.close()


def bind(host: str, port: int, kind: int, what: str) -> socket.socket:
    """A socket bound to host:port (TCP or UDP), or a one-line CliError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        hint = ("stop the process using it or choose another port"
                if exc.errno == errno.EADDRINUSE else "check the address")
        raise CliError(f"cannot listen on {host}:{port}/{proto} ({what}): "
                       f"{exc.strerror or exc}; {hint}") from exc
    sock.set_inheritable(True)
    return sock


def bind_all(settings: Settings, host: str, port: int) -> Sockets:
    """The API socket (host/port: api.listen or the command line's
    overrides) and, when enabled, the heartbeat socket."""
    api = bind(host, port, socket.SOCK_STREAM, "api.listen")
    heartbeat = None
    if settings.heartbeat.enabled:
        hb = settings.heartbeat
        try:
            heartbeat = bind(hb.host, hb.port, socket.SOCK_DGRAM, "heartbeat.listen")
        except CliError:
            api.close()
            raise
    return Sockets(api, heartbeat)
