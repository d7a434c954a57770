"""Rows of the `bmcs` table <-> BmcRecord, shared by SqlStore and FakeStore.
No I/O; the password stays ciphertext on both sides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vmha.domain.bmc import BmcRecord

FIELDS = ("host", "username", "password_secret", "ipmi_address", "ipmi_port", "redfish_url",
          "redfish_system", "fence_agent", "updated_at")


def bmc_row(b: BmcRecord) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(b, name) for name in FIELDS}
    row["fence_agent_options"] = {str(k): str(v) for k, v in b.fence_agent_options.items()}
    return row


def bmc_from(r: Mapping[str, Any]) -> BmcRecord:
    return BmcRecord(**{name: r[name] for name in FIELDS},
                     fence_agent_options=dict(r["fence_agent_options"] or {}))
