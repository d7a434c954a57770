"""The controller's copy of the agents' heartbeat secrets (vmha.controller.service.
AgentSecrets): the records are opened again only when a secret was written."""

from __future__ import annotations

from vmha.adapters.store.fake import FakeStore
from vmha.controller.service import AgentSecrets
from vmha.domain.agents import AgentRecord
from vmha.domain.model import Host, Segment


class CountingStore(FakeStore):
    def __init__(self) -> None:
        super().__init__()
        self.listed = 0

    def list_agents(self) -> list[AgentRecord]:
        self.listed += 1
        return super().list_agents()


class Intake:
    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}
        self.handed = 0

    def set_secrets(self, secrets: dict[str, bytes]) -> None:
        self.secrets, self.handed = dict(secrets), self.handed + 1


def test_secrets_are_read_again_only_when_one_was_written() -> None:
    store = CountingStore()
    store.create_segment(Segment("s"))
    for name in ("h1", "h2"):
        store.create_host(Host(name, "s"))
    store.save_agent(AgentRecord("h1", "a" * 32))
    secrets, intake = AgentSecrets(store), Intake()
    secrets.attach(intake)  # type: ignore[arg-type]
    secrets.reload()
    assert intake.secrets == {"h1": b"a" * 32} and store.listed == 1
    for _ in range(3):
        secrets.reload()
    assert store.listed == 1 and intake.handed == 2  # nothing written: nothing opened
    store.save_agent(AgentRecord("h2", "b" * 32))
    secrets.reload()
    assert intake.secrets == {"h1": b"a" * 32, "h2": b"b" * 32} and store.listed == 2
    store.save_agent(AgentRecord("h1", "c" * 32))  # a new secret for a known host
    secrets.reload()
    assert intake.secrets["h1"] == b"c" * 32 and store.listed == 3
    store.delete_host("h2")
    secrets.reload()
    assert set(intake.secrets) == {"h1"}
