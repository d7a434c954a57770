"""Log output of `vmha serve` and `vmha agent`: text lines or JSON lines.

`setup_logging(level, fmt)` configures the root logger once, at start-up.
`json` writes one object per line with `time` (UTC, ISO 8601, ms),
`level`, `logger`, `message`, and `exc` when an exception is attached —
what journald, Loki or Elasticsearch ingest without a parsing rule.
Messages are the same text in both formats (they are part of the
interface); nothing here adds fields that could carry secrets.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        out = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record arrives, not to the
    stream that was current at set-up: a caller that swaps stderr (a test
    runner invoking `vmha serve` in process, then closing its capture) must
    not leave the root logger writing to a closed file."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(level: str, fmt: LogFormat = "text") -> None:
    """Install the stderr handler and the root level, as `logging.basicConfig`
    would: when someone else already configured the root logger (a test
    runner's capture, an embedding program) nothing changes, so running the
    CLI in process never leaks a level or a handler into its host."""
    root = logging.getLogger()
    if any(not isinstance(h, StderrHandler) for h in root.handlers):
        return
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
