"""Store contract for BMC credentials (issue 5), on every backend like
test_contract.py: the password column holds whatever ciphertext it is given."""

from __future__ import annotations

import pytest

from vmha.domain.bmc import BmcRecord
from vmha.domain.errors import NotFound, ValidationError
from vmha.domain.model import Host, Segment
from vmha.ports import Store


def bmc(host: str = "h1", **over: object) -> BmcRecord:
    values: dict[str, object] = dict(
        host=host, username="admin", password_secret="gAAAA-cipher", ipmi_address="10.0.0.5",
        ipmi_port=6231, redfish_url="https://10.0.0.5:8443", redfish_system="node1",
        fence_agent="fence_ipmilan", fence_agent_options={"lanplus": "1"}, updated_at=5.0)
    values.update(over)
    return BmcRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def with_host(store: Store) -> Store:
    store.create_segment(Segment(name="s1"))
    store.create_host(Host(name="h1", segment="s1"))
    store.create_host(Host(name="h2", segment="s1"))
    return store


def test_bmc_round_trip_replace_and_delete(with_host: Store) -> None:
    store = with_host
    assert store.save_bmc(bmc()) == bmc()
    assert store.get_bmc("h1") == bmc()
    changed = bmc(ipmi_address="", fence_agent="", fence_agent_options={}, updated_at=6.0)
    assert store.save_bmc(changed) == changed
    assert store.get_bmc("h1").fence_agent_options == {}
    with pytest.raises(NotFound):
        store.get_bmc("h2")
    store.delete_bmc("h1")
    with pytest.raises(NotFound):
        store.get_bmc("h1")
    with pytest.raises(NotFound):
        store.delete_bmc("h1")


def test_bmc_needs_its_host_and_goes_with_it(with_host: Store) -> None:
    store = with_host
    with pytest.raises(NotFound):
        store.save_bmc(bmc("h9"))
    store.save_bmc(bmc("h2"))
    store.delete_host("h2")
    store.create_host(Host(name="h2", segment="s1"))
    with pytest.raises(NotFound):
        store.get_bmc("h2")


def test_a_stored_option_dict_is_a_copy(with_host: Store) -> None:
    options = {"lanplus": "1"}
    with_host.save_bmc(bmc(fence_agent_options=options))
    options["lanplus"] = "0"
    assert with_host.get_bmc("h1").fence_agent_options == {"lanplus": "1"}


def test_bmc_record_refuses_secrets_in_options_and_no_endpoint() -> None:
    with pytest.raises(ValidationError, match=r"fence_agent_options\.passwd"):
        bmc(fence_agent_options={"passwd": "x"})
    with pytest.raises(ValidationError, match="ipmi_address"):
        bmc(ipmi_address="", redfish_url="")
    assert "gAAAA" not in repr(bmc())
