"""An Event in the two wire formats of issue 7, as pure functions.

- `cloudevent(event, source)`: CloudEvents 1.0 structured JSON, the body of
  webhook deliveries and the `data:` of SSE frames.
- `oslo_notification(event, publisher_id)`: the oslo.messaging notification
  envelope (event_type, payload, publisher_id, priority, timestamp,
  message_id) for the OpenStack bus (Ceilometer / Aodh event alarms).

Both are deterministic (ids derive from the event id, never random) so a
re-sent event is byte-for-byte the same and receivers can dedupe. No I/O.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from vmha.domain.model import Event, Severity

SPECVERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
OSLO_EVENT_PREFIX = "vmha."
# uuid5 namespace for oslo message ids: the same event always gets the same id.
_MESSAGE_NS = uuid.UUID("6f0c3c57-9d44-4c1e-8a8e-7a6d6861b001")
_PRIORITY = {
    Severity.INFO: "INFO",
    Severity.WARNING: "WARN",
    Severity.ERROR: "ERROR",
    Severity.CRITICAL: "CRITICAL",
}
# Ceilometer's event pipeline reads only `info` and `error` notifications.
_CEILOMETER_PRIORITY = {
    Severity.INFO: "INFO",
    Severity.WARNING: "INFO",
    Severity.ERROR: "ERROR",
    Severity.CRITICAL: "ERROR",
}


def _rfc3339(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_data(event: Event) -> dict[str, Any]:
    """What a consumer needs besides the envelope: kind, project, severity
    and the event's own payload."""
    return {
        "subject_kind": event.subject_kind.value,
        "project": event.project,
        "severity": event.severity.value,
        **dict(event.payload),
    }


def cloudevent(event: Event, source: str = "vmha") -> dict[str, Any]:
    """CloudEvents 1.0 attributes + data. `id` is the outbox id (as text),
    unique per source: receivers dedupe on (source, id)."""
    body: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": str(event.id),
        "source": source,
        "type": event.type,
        "time": _rfc3339(event.time),
        "subject": event.subject,
        "datacontenttype": "application/json",
        # Extension attributes (lower-case alphanumerics only, per the spec).
        "vmhaseverity": event.severity.value,
        "data": event_data(event),
    }
    if event.project:
        body["vmhaproject"] = event.project
    return body


def cloudevent_json(event: Event, source: str = "vmha") -> bytes:
    """The exact bytes sent (and signed) for one event."""
    return json.dumps(cloudevent(event, source), separators=(",", ":"), sort_keys=True).encode()


def oslo_notification(event: Event, publisher_id: str = "vmha",
                      project_id: str = "", ceilometer: bool = False) -> dict[str, Any]:
    """The oslo.messaging notification envelope of one event. `event_type`
    is namespaced (`vmha.host.failed`) so Aodh alarms can match `vmha.*`.
    The payload is flat and carries `project_id`/`tenant_id` (Ceilometer
    makes them the event's project, which Aodh matches against an alarm's):
    the instance's project, else `project_id` (the operators' project, for
    host events). `ceilometer`: priorities INFO/ERROR only (warnings as
    INFO, critical as ERROR), the two Ceilometer's event pipeline reads;
    the payload's `severity` still says which it was."""
    stamp = datetime.fromtimestamp(event.time, tz=UTC)
    return {
        "message_id": str(uuid.uuid5(_MESSAGE_NS, f"{publisher_id}/{event.id}")),
        "publisher_id": publisher_id,
        "event_type": OSLO_EVENT_PREFIX + event.type,
        "priority": (_CEILOMETER_PRIORITY if ceilometer else _PRIORITY)[event.severity],
        "timestamp": stamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "payload": {
            "id": event.id,
            "subject": event.subject,
            "time": _rfc3339(event.time),
            "project_id": event.project or project_id,
            "tenant_id": event.project or project_id,
            **event_data(event),
        },
    }
