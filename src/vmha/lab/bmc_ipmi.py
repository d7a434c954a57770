"""An IPMI 2.0 (RMCP+ / lanplus) BMC emulator for one lab host, on pyghmi.

Started by tests, benchmarks and (later) the lab as
`python -m vmha.lab.bmc_ipmi --port P --user U --password-file F
(--state-file S | --off-cmd CMD --on-cmd CMD [--status-cmd CMD])`;
it listens on UDP 127.0.0.1:P (`--address` to change) until killed.
Chassis control drives a `vmha.lab.power.PowerBackend`.

Two fixes over pyghmi's stock server (LAB-NOTES, "BMCs and fencing"):
- it only speaks cipher suite 3 (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128) but
  accepts any proposal; pyghmi's own client proposes SHA-256 first and then
  crashes on the SHA-1 answer. We refuse any other proposal with RMCP+
  status 0x11 ("no cipher suite match"), so clients fall back to suite 3.
- an unknown user name gets RAKP2 status 0x0D ("unauthorized name") rather
  than silence, so a client sees an authentication error, not a timeout.

It must not log passwords. It serves one BMC per process.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.constants as ipmi_constants
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as ipmisession

from vmha.lab.power import PowerBackend, add_power_arguments, backend_from_args

log = logging.getLogger("vmha.lab.bmc_ipmi")

# RMCP+ algorithm numbers of cipher suite 3, the only one the server speaks.
SUITE3 = {"auth": 1, "integrity": 1, "confidentiality": 1}
NO_CIPHER_MATCH = 0x11
UNAUTHORIZED_NAME = 0x0D
# IPMI completion code "unspecified error": the power backend failed.
UNSPECIFIED_ERROR = 0xFF


def _proposal(request: bytearray) -> tuple[int, int, int]:
    """(auth, integrity, confidentiality) algorithms of an RMCP+ open
    session request (IPMI 2.0 table 13-16: three 8-byte payloads from 8)."""
    if len(request) < 32:
        return (-1, -1, -1)
    return (request[12] & 0x3F, request[20] & 0x3F, request[28] & 0x3F)


class _Sha1OnlySession(serversession.ServerSession):  # type: ignore[misc]
    """pyghmi's server session, refusing what it cannot speak."""

    def create_open_session_response(self, request: Any) -> bytearray:
        request = bytearray(request)
        if _proposal(request) == tuple(SUITE3.values()):
            response: bytearray = super().create_open_session_response(request)
            return response
        # Table 13-17: tag, status, max privilege, reserved, console session id.
        return bytearray([request[0], NO_CIPHER_MATCH, 0, 0]) + bytearray(request[4:8])

    def _got_rakp1(self, data: Any) -> None:
        name = bytes(data[28:])
        if data[27] == 0 or self.authdata.get(name.decode("utf-8", "replace")) is None:
            log.warning("refused a session for unknown user %r", name.decode("utf-8", "replace"))
            # Table 13-10: tag, status, reserved x2, console session id.
            reply = bytearray([data[0], UNAUTHORIZED_NAME, 0, 0]) + bytearray(self.clientsessionid)
            self.send_payload(reply, ipmi_constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)

    def close_server_session(self) -> None:
        # pyghmi leaves a closed session registered for the client's address,
        # and that client's next login (same UDP socket) lands in the stale
        # session and is sometimes dropped: the client retransmits after
        # 0.5-1.5 s. Forget it, so the next login gets a fresh session.
        handlers = ipmisession.Session.bmc_handlers.get(self.sockaddr)
        if handlers is not None and handlers.get(self.bmc.port) is self:
            del handlers[self.bmc.port]
            if not handlers:
                del ipmisession.Session.bmc_handlers[self.sockaddr]

    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        # A packet queued for this session after it closed: the BMC handles it.
        self.bmc.sessionless_data(data, sockaddr)


class EmulatedBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
    """A BMC whose chassis power is a `PowerBackend`."""

    def __init__(self, users: dict[str, str], power: PowerBackend, port: int, address: str) -> None:
        super().__init__(users, port=port, address=address)
        self.power = power
        self._lock = threading.Lock()

    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        raw = bytearray(data)
        # An RMCP+ open session request (IPMI 2.0 payload type 0x10) starts a
        # session: ours, so the proposal check above applies.
        is_ipmi2 = len(raw) >= 22 and raw[0] == 6 and raw[2:4] == b"\xff\x07" and raw[4] == 6
        if is_ipmi2 and raw[5] == 0x10:
            _Sha1OnlySession(
                self.authdata, self.kg, sockaddr, self.serversocket, raw[16:], self.uuid, self
            )
            return
        super().sessionless_data(data, sockaddr)

    def get_power_state(self) -> str:
        with self._lock:
            return "on" if self.power.power_state() else "off"

    def power_off(self) -> int:
        return self._change("off", self.power.power_off)

    def power_on(self) -> int:
        return self._change("on", self.power.power_on)

    def power_shutdown(self) -> int:
        # A lab host has no ACPI: a soft shutdown is a hard off.
        return self._change("off (soft)", self.power.power_off)

    def power_cycle(self) -> int:
        return self._change("cycle", self._cycle)

    def power_reset(self) -> int:
        return self._change("reset", self._cycle)

    def _cycle(self) -> None:
        self.power.power_off()
        self.power.power_on()

    def _change(self, what: str, action: Any) -> int:
        try:
            with self._lock:
                action()
        except Exception:
            # The top of this request: report the failure to the IPMI client.
            log.exception("power %s failed", what)
            return UNSPECIFIED_ERROR
        log.info("power %s", what)
        return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vmha.lab.bmc_ipmi", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True, help="file holding the password")
    add_power_arguments(p)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s bmc_ipmi: %(message)s"
    )
    password = Path(args.password_file).read_text(encoding="utf-8").strip()
    power = backend_from_args(args, "bmc_ipmi")
    bmc = EmulatedBmc({args.user: password}, power, args.port, args.address)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("listening on udp %s:%d for user %s", args.address, args.port, args.user)
    serve_forever(bmc)


def serve_forever(bmc: EmulatedBmc) -> None:
    """Run pyghmi's packet loop (it dispatches to every registered BMC)."""
    while bmc.serversocket is not None:
        ipmisession.Session.wait_for_rsp(30)


if __name__ == "__main__":
    main()
