"""Event dispatch (DESIGN.md rule 5): outbox -> webhooks (and later AMQP).

- `render`: an Event as CloudEvents 1.0 JSON and as an oslo notification.
- `urls`: outbound URL safety checks (no SSRF to private addresses).
- `webhook`: the signed HTTP POST of one event (`WebhookSender`) and the
  signature helpers receivers use.
- `dispatcher`: the background task that reads the outbox in order and
  delivers to every subscription, with retries and dead letters.

Used by the controller service (`vmha.controller.service`) and the API; nothing
here reads settings from a global.
"""

from __future__ import annotations
