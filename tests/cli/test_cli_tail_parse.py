"""The SSE parsing and backoff of `vmha event tail` (vmha.cli.tail), on
hand-written frames; the real stream is tested in test_cli_event_tail.py."""

from __future__ import annotations

from vmha.adapters.bus.render import cloudevent
from vmha.cli.tail import BACKOFF_MAX_S, backoff, event_of, frames
from vmha.domain.model import Event, Severity, SubjectKind


def test_frames_split_on_blank_lines_keep_comments_drop_a_cut_frame() -> None:
    lines = ["retry: 1000", ": vmha event stream after 41", "",
             "id: 42", "event: host.up", "data: {\"a\":", "data: 1}", "",
             ": keep-alive", "", "id:43", "data:x"]
    got = list(frames(iter(lines)))
    assert [(f.id, f.event, f.data, f.comments) for f in got] == [
        (None, None, [], ["vmha event stream after 41"]),
        ("42", "host.up", ['{"a":', "1}"], []),
        (None, None, [], ["keep-alive"]),
    ]  # the last frame never ended: dropped


def test_event_of_inverts_the_cloudevent() -> None:
    event = Event("instance.crashed", "vm-1", 1_800_000_000.125, SubjectKind.INSTANCE, "p1",
                  Severity.ERROR, {"reason": "panicked", "host": "cn1"}, id=7)
    assert event_of(cloudevent(event, "vmha")) == {
        "id": 7, "type": "instance.crashed", "subject": "vm-1", "subject_kind": "instance",
        "project": "p1", "severity": "error", "time": 1_800_000_000.125,
        "payload": {"reason": "panicked", "host": "cn1"},
    }


def test_backoff_doubles_to_a_cap_with_jitter() -> None:
    assert [backoff(n, lambda: 0.5) for n in range(3)] == [0.25, 0.5, 1.0]
    assert backoff(50, lambda: 0.5) == BACKOFF_MAX_S
    assert backoff(0, lambda: 0.0) == 0.25 * 0.8 and backoff(0, lambda: 1.0) == 0.25 * 1.2
