"""The controller's power fencers, over stored BMCs and `[bmcs.*]` entries.

`build_fencers(settings, bmc_of, store, box)` returns the Fencer per method
that the engine's fence levels name (`ipmi`, `redfish`, `fence_agent`).
Each call resolves the host's BMC afresh: first the store's record
(`PUT /v1/hosts/{name}/bmc`, password decrypted with `box`), else the
`[bmcs.<name>]` entry named by `bmc_of(host)` (its `bmc` field, else its own
name). A host without a BMC, or without that protocol in it, makes the level
fail with NotFound, and the engine moves on to the next level.

`fence_agent` runs the host's own agent (`fence_agent = "fence_ipmilan"`)
with its `fence_agent_options`, against the IPMI address when there is one
(fence_redfish: the Redfish URL). Part of the composition root
(vmha.controller.service); no I/O at build time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vmha.adapters.fencing.config import BmcEndpoint
from vmha.adapters.fencing.fence_agent import AgentTarget, PerHostAgentFencer
from vmha.adapters.fencing.ipmi import IpmiFencer
from vmha.adapters.fencing.redfish import RedfishFencer
from vmha.adapters.fencing.secrets import SecretBox
from vmha.config import BmcConfig, Settings
from vmha.errors import ConfigError, NotFound
from vmha.ports import Fencer, Store

SYSTEMS = "/redfish/v1/Systems/"


@dataclass(frozen=True)
class HostBmc:
    """One host's BMC, from the store or the config."""

    username: str
    password: str = field(repr=False)
    ipmi_address: str = ""
    ipmi_port: int = 623
    redfish_url: str = ""
    redfish_system: str = ""
    fence_agent: str = ""
    fence_agent_options: Mapping[str, str] = field(default_factory=dict)
    source: str = ""  # "store" or "[bmcs.<name>]"

    def ipmi(self) -> BmcEndpoint:
        return BmcEndpoint(self.ipmi_address, self.username, self.password,
                           port=self.ipmi_port)

    def redfish(self) -> BmcEndpoint:
        system = self.redfish_system
        if system and not system.startswith("/"):
            system = SYSTEMS + system
        return BmcEndpoint(self.redfish_url, self.username, self.password, system=system)


def _from_config(bmc: BmcConfig, name: str) -> HostBmc:
    return HostBmc(bmc.username, bmc.secret(), bmc.ipmi_address, bmc.ipmi_port,
                   bmc.redfish_url, bmc.redfish_system, bmc.fence_agent,
                   dict(bmc.fence_agent_options), f"[bmcs.{name}]")


class BmcResolver:
    """host name -> HostBmc: the store's record wins over the config."""

    def __init__(self, settings: Settings, bmc_of: Callable[[str], str],
                 store: Store | None = None, box: SecretBox | None = None) -> None:
        self._settings, self._bmc_of, self._store, self._box = settings, bmc_of, store, box

    def __call__(self, host: str) -> HostBmc:
        stored = self._stored(host)
        if stored is not None:
            return stored
        name = self._bmc_of(host)
        bmc = self._settings.bmcs.get(name)
        if bmc is None:
            raise NotFound("BMC of host", host)
        return _from_config(bmc, name)

    def _stored(self, host: str) -> HostBmc | None:
        if self._store is None:
            return None
        try:
            rec = self._store.get_bmc(host)
        except NotFound:
            return None
        if self._box is None:
            raise ConfigError(f"host {host}'s BMC is stored encrypted but this controller "
                              "has no secret key: set [fencing] secret_key_file or "
                              "VMHA_SECRET_KEY")
        password = self._box.decrypt(rec.password_secret, f"the stored BMC password of {host}")
        return HostBmc(rec.username, password, rec.ipmi_address, rec.ipmi_port,
                       rec.redfish_url, rec.redfish_system, rec.fence_agent,
                       dict(rec.fence_agent_options), "store")

    def ipmi(self, host: str) -> BmcEndpoint:
        bmc = self(host)
        if not bmc.ipmi_address:
            raise NotFound("ipmi BMC of host", host)
        return bmc.ipmi()

    def redfish(self, host: str) -> BmcEndpoint:
        bmc = self(host)
        if not bmc.redfish_url:
            raise NotFound("redfish BMC of host", host)
        return bmc.redfish()

    def agent(self, host: str) -> AgentTarget:
        bmc = self(host)
        if not bmc.fence_agent:
            raise NotFound("fence agent of host", host)
        use_redfish = bmc.fence_agent == "fence_redfish" or not bmc.ipmi_address
        endpoint = bmc.redfish() if use_redfish else bmc.ipmi()
        return AgentTarget(bmc.fence_agent, endpoint, dict(bmc.fence_agent_options))


def build_fencers(settings: Settings, bmc_of: Callable[[str], str],
                  store: Store | None = None, box: SecretBox | None = None
                  ) -> dict[str, Fencer]:
    bmcs = BmcResolver(settings, bmc_of, store, box)
    fencing = settings.fencing
    ca = str(fencing.redfish_ca_bundle) if fencing.redfish_ca_bundle else None
    return {
        "ipmi": IpmiFencer(bmcs.ipmi, timeout_s=fencing.ipmi_timeout_s),
        "redfish": RedfishFencer(bmcs.redfish, timeout_s=fencing.redfish_timeout_s,
                                 verify=fencing.redfish_verify, ca_bundle=ca),
        "fence_agent": PerHostAgentFencer(bmcs.agent, timeout_s=fencing.fence_agent_timeout_s),
    }
