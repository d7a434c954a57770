"""A Store wrapper that shows the simulator every event the controller stores.

Every mutating Store call carries its events (the outbox); `StoreTap`
forwards the call to the real store and, when it succeeded, hands the
events to `on_events` (the log and the invariant checker). Reads pass
through untouched. Used by the runner only; it changes no data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from vmha.domain.model import Event

# method name -> index of the `events` argument when given positionally
_EVENT_ARG = {
    "append_events": 0,
    "save_job": 2,
    **{f"{verb}_{kind}": 1 for verb in ("create", "update", "delete")
       for kind in ("segment", "host", "instance", "job")},
}


class StoreTap:
    def __init__(self, inner: Any, on_events: Callable[[Sequence[Event]], None]) -> None:
        self._inner = inner
        self._on_events = on_events

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        index = _EVENT_ARG.get(name)
        if index is None:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            result = target(*args, **kwargs)
            events = kwargs.get("events", args[index] if len(args) > index else ())
            if events:
                self._on_events(list(events))
            return result

        return call
