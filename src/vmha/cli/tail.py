"""The client side of `GET /v1/events/stream`, for `vmha event tail`.

`EventTail(url, token, types, since, show, count).run()` reads the
Server-Sent Events stream, turns each frame's CloudEvents JSON back into
the event shape of `GET /v1/events` and hands it to `show`. When the
connection drops (controller restarted, network cut, stream ended) it
prints one notice line on stderr, waits with exponential backoff and
reconnects with `Last-Event-ID: <last event seen>`, so nothing is lost
and nothing is printed twice. Without `since` the first connection starts
at the newest event; the cursor then comes from the stream's opening
comment (`: vmha event stream after N`), so even a drop before the first
event resumes at the right place.

Refusals (4xx: bad token, bad filter) end the command with a `CliError`;
so does a controller that cannot be reached on the first connection.
Talks only to the API; never to the store.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import typer

from vmha.cli.client import TIMEOUT_S, CliError, auth_headers, describe_problem
from vmha.domain.backoff import delay_s

# Longer than the server's keep-alive comment interval ([events]
# sse_heartbeat_s, 15 s): a silent connection this long is dead.
READ_TIMEOUT_S = 45.0
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 5.0
BACKOFF_JITTER = 0.2
_OPENING = re.compile(r"^vmha event stream after (\d+)$")
pause = time.sleep  # between reconnects; tests may replace it


class _Dropped(Exception):
    """The stream ended or failed in a way worth reconnecting after;
    `first` is what to say if it happens on the first connection."""

    def __init__(self, reason: str, first: str | None = None) -> None:
        super().__init__(reason)
        self.first = first or reason


@dataclass
class Frame:
    """One SSE message: the `id:`, `event:` and joined `data:` fields."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


def frames(lines: Iterator[str]) -> Iterator[Frame]:
    """Parse SSE lines (without line ends) into frames; a blank line ends
    one. Comments (`: ...`) travel with the next frame or end alone. A
    frame cut off by the end of the stream is dropped, as the SSE spec
    says: it is sent again after the reconnect."""
    frame = Frame()
    for line in lines:
        if not line:
            if frame.data or frame.comments or frame.id is not None:
                yield frame
            frame = Frame()
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            frame.comments.append(value)
        elif name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            frame.data.append(value)


def event_of(cloudevent: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvents body of vmha back in the shape of `GET /v1/events`
    (time to the millisecond, as the CloudEvent carries it)."""
    data = dict(cloudevent.get("data") or {})
    kind = data.pop("subject_kind", "")
    project = data.pop("project", "")
    severity = data.pop("severity", cloudevent.get("vmhaseverity", ""))
    stamp = datetime.fromisoformat(str(cloudevent["time"]).replace("Z", "+00:00"))
    return {
        "id": int(cloudevent["id"]), "type": cloudevent["type"],
        "subject": cloudevent.get("subject", ""), "subject_kind": kind,
        "project": project, "severity": severity, "time": stamp.timestamp(),
        "payload": data,
    }


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before reconnect number `attempt` (0-based): doubling, capped,
    with ±BACKOFF_JITTER so many tails do not come back in step."""
    return delay_s(attempt, BACKOFF_INITIAL_S, BACKOFF_MAX_S, BACKOFF_JITTER, rand())


class EventTail:
    """Follows the event stream across reconnects (see the module doc)."""

    def __init__(self, url: str, token: str | None, types: list[str], since: int | None,
                 show: Callable[[dict[str, Any]], None], count: int | None = None) -> None:
        self.url = url.rstrip("/")
        self.types = types
        self.cursor = since  # the last event id seen (None: the server's newest)
        self.show = show
        self.left = count  # events still to print before exiting (None: forever)
        self._http = httpx.Client(base_url=self.url, headers=auth_headers(token),
                                  timeout=httpx.Timeout(TIMEOUT_S, read=READ_TIMEOUT_S))

    def __enter__(self) -> EventTail:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def run(self) -> None:
        """Print events until `count` is reached (or forever)."""
        attempt, connected = 0, False
        while True:
            try:
                with self._open() as response:
                    if attempt:
                        typer.echo(f"reconnected to {self.url}; resuming after event "
                                   f"#{self.cursor}", err=True)
                    connected, attempt = True, 0
                    if self._read(response):
                        return
                reason = "the server ended the stream"
            except _Dropped as exc:
                if not connected:
                    raise CliError(exc.first) from exc
                reason = str(exc)
            delay = backoff(attempt)
            typer.echo(self._notice(attempt, reason, delay), err=True)
            attempt += 1
            pause(delay)

    def _notice(self, attempt: int, reason: str, delay: float) -> str:
        if attempt:
            return f"cannot reconnect to {self.url} ({reason}); retrying in {delay:.1f} s"
        after = "the newest event" if self.cursor is None else f"event #{self.cursor}"
        return (f"lost the event stream from {self.url} ({reason}); reconnecting in "
                f"{delay:.1f} s, resuming after {after}")

    @contextmanager
    def _open(self) -> Iterator[httpx.Response]:
        headers = {"Accept": "text/event-stream"}
        if self.cursor is not None:
            headers["Last-Event-ID"] = str(self.cursor)
        params = {"type": self.types} if self.types else None
        try:
            with self._http.stream("GET", "/v1/events/stream", params=params,
                                   headers=headers) as response:
                if response.status_code >= 500:
                    response.read()
                    raise _Dropped(describe_problem(response))
                if response.status_code >= 400:
                    response.read()
                    raise CliError(describe_problem(response))
                yield response
        except httpx.ConnectError as exc:
            raise _Dropped(_reason(exc), first=(
                f"cannot reach the vmha API at {self.url} ({_reason(exc)}); start it with "
                "'vmha serve' or point --url / VMHA_URL at a running controller")) from exc
        except httpx.TimeoutException as exc:
            raise _Dropped(f"no data from {self.url} for {READ_TIMEOUT_S:g} s") from exc
        except httpx.HTTPError as exc:
            raise _Dropped(f"{type(exc).__name__}: {_reason(exc)}") from exc

    def _read(self, response: httpx.Response) -> bool:
        """Show each event frame; True once `count` events were shown."""
        for frame in frames(response.iter_lines()):
            for comment in frame.comments:
                opening = _OPENING.match(comment)
                if opening and self.cursor is None:
                    self.cursor = int(opening.group(1))
            if not frame.data or frame.id is None:
                continue
            try:
                event = event_of(json.loads("\n".join(frame.data)))
            except (ValueError, KeyError, TypeError) as exc:
                raise CliError(f"{self.url}/v1/events/stream sent a frame that is not a "
                               f"vmha event (id {frame.id}): {exc}") from exc
            self.show(event)
            self.cursor = event["id"]
            if self.left is not None:
                self.left -= 1
                if self.left == 0:
                    return True
        return False


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text
