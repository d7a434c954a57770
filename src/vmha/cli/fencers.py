"""The controller's power fencers, built from `[bmcs.*]` and `[fencing]`.

`build_fencers(settings, bmc_of)` returns the Fencer per method that the
engine's fence levels name (`ipmi`, `redfish`). `bmc_of(host)` gives the
name of the host's `[bmcs.<name>]` entry (its `bmc` field, else its own
name); a host without an entry, or without that protocol in it, makes the
level fail with NotFound, and the engine moves on to the next level.
Part of the composition root (vmha.cli.service); no I/O at build time.
"""

from __future__ import annotations

from collections.abc import Callable

from vmha.adapters.fencing.config import BmcEndpoint
from vmha.adapters.fencing.ipmi import IpmiFencer
from vmha.adapters.fencing.redfish import RedfishFencer
from vmha.config import BmcConfig, Settings
from vmha.errors import NotFound
from vmha.ports import Fencer

SYSTEMS = "/redfish/v1/Systems/"


def build_fencers(settings: Settings, bmc_of: Callable[[str], str]) -> dict[str, Fencer]:
    def entry(host: str, protocol: str) -> BmcConfig:
        name = bmc_of(host)
        bmc = settings.bmcs.get(name)
        if bmc is None or not getattr(bmc, f"{protocol}_address" if protocol == "ipmi"
                                      else "redfish_url"):
            raise NotFound(f"{protocol} BMC of host", host)
        return bmc

    def ipmi(host: str) -> BmcEndpoint:
        bmc = entry(host, "ipmi")
        return BmcEndpoint(bmc.ipmi_address, bmc.username, bmc.secret(), port=bmc.ipmi_port)

    def redfish(host: str) -> BmcEndpoint:
        bmc = entry(host, "redfish")
        system = bmc.redfish_system
        if system and not system.startswith("/"):
            system = SYSTEMS + system
        return BmcEndpoint(bmc.redfish_url, bmc.username, bmc.secret(), system=system)

    fencing = settings.fencing
    ca = str(fencing.redfish_ca_bundle) if fencing.redfish_ca_bundle else None
    return {
        "ipmi": IpmiFencer(ipmi, timeout_s=fencing.ipmi_timeout_s),
        "redfish": RedfishFencer(redfish, timeout_s=fencing.redfish_timeout_s,
                                 verify=fencing.redfish_verify, ca_bundle=ca),
    }
