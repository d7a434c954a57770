"""`fence_vmha`: a ClusterLabs fence agent that fences a VM through vmha.

For clusters that run inside VMs (Pacemaker in guests): the cluster's
fencer calls `fence_vmha` to power a peer VM off or on through vmha's
instance actions API (`POST /v1/instances/{id}/actions`, `stop` or
`start`), with a project token, so it can act only on its project's
instances. It follows the fence-agent interface of ClusterLabs'
fence-agents (the same as `fence_ipmilan`):

- options on stdin as `key=value` lines when there are no arguments (what
  Pacemaker's fencer does), else as command-line options; the standard
  names: `action` (`-o`), `ip` (`-a`, alias `ipaddr`), `ipport` (`-u`),
  `ssl` (`-z`), `ssl_insecure`, `ssl_secure`, `password` (`-p`, alias
  `passwd`) or `password_script` (`-S`), `plug` (`-n`, alias `port`: the
  instance id, or its unique name), `power_timeout`, `power_wait`,
  `shell_timeout`, `delay`, `method`, `separator`, `verbose`, `debug_file`;
  `login` and `nodename` are accepted and not used;
- actions `on`, `off`, `reboot`, `status`, `list`, `list-status`,
  `monitor`, `metadata`, `validate-all`;
- exit codes: 0 success (status: on), 2 status off, 1 any failure.

`off` returns only once vmha records the instance stopped, which it does
after the host's hypervisor confirmed the domain shut off (the stop action
destroys the domain and reads its state back); `on` once it runs again.
Standard library only (urllib): a fence agent must start fast and depend
on nothing but vmha itself. Installed as the console script `fence_vmha`.
"""

from __future__ import annotations

import getopt
import json
import logging
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO
from xml.sax.saxutils import quoteattr

log = logging.getLogger("fence_vmha")

EC_OK, EC_FAILED, EC_STATUS_OFF = 0, 1, 2
ACTIONS = ("on", "off", "reboot", "status", "list", "list-status", "monitor", "metadata",
           "validate-all")
POLL_S = 0.5
_TRUE = ("1", "yes", "on", "true")


@dataclass(frozen=True)
class Opt:
    name: str  # stdin key; the long option is --name with '_' as '-'
    short: str  # getopt letter ("" for none)
    flag: bool  # takes no value
    default: str
    desc: str
    aliases: tuple[str, ...] = ()
    required: bool = False
    hidden: bool = False  # accepted, not in the metadata

    @property
    def long(self) -> str:
        return self.name.replace("_", "-")


OPTIONS = (
    Opt("action", "o", False, "reboot", "Fencing action: " + ", ".join(ACTIONS)),
    Opt("ip", "a", False, "", "Host name or address of the vmha API", ("ipaddr",), True),
    Opt("ipport", "u", False, "", "TCP port of the vmha API (default 80, 443 with ssl)"),
    Opt("ssl", "z", True, "", "Use HTTPS"),
    Opt("ssl_insecure", "", True, "", "Use HTTPS without verifying the certificate"),
    Opt("ssl_secure", "", True, "", "Use HTTPS and verify the certificate"),
    Opt("password", "p", False, "", "A vmha project token (bearer)", ("passwd",)),
    Opt("password_script", "S", False, "", "Script that prints the project token",
        ("passwd_script",)),
    Opt("plug", "n", False, "", "The instance id (or its unique name) to fence", ("port",)),
    Opt("login", "l", False, "", "Not used (vmha authenticates with the token)",
        ("username",), hidden=True),
    Opt("power_timeout", "", False, "60", "Seconds to wait for the VM to be off or on"),
    Opt("power_wait", "", False, "0", "Seconds to wait after an on or off"),
    Opt("shell_timeout", "", False, "10", "Seconds to wait for one API answer"),
    Opt("delay", "", False, "0", "Seconds to wait before fencing (off, reboot)"),
    Opt("method", "m", False, "onoff", "Reboot method: onoff (off then on) or cycle "
        "(vmha's restart action)"),
    Opt("separator", "c", False, ",", "Separator of the list action's fields"),
    Opt("verbose", "v", True, "", "Verbose output"),
    Opt("debug_file", "D", False, "", "Write debug output to this file"),
    Opt("nodename", "", False, "", "Node name (given by the fencer; not used)", hidden=True),
)
BY_NAME = {n: o for o in OPTIONS for n in (o.name, *o.aliases)}
DOCS = ("Fence agent for VMs protected by vmha",
        "fence_vmha powers a VM off or on through vmha's instance actions API "
        "(POST /v1/instances/{id}/actions) with a project token, so that clusters "
        "running inside VMs (Pacemaker in guests) can fence a peer VM. off returns only "
        "once vmha recorded the VM stopped, after its host's hypervisor confirmed it.")


class Failure(Exception):
    """The fencing operation failed: print the message, exit 1."""


def usage_error(message: str) -> NoReturn:
    log.error("%s; see fence_vmha -h", message)
    raise SystemExit(EC_FAILED)


def parse_stdin(stream: TextIO) -> dict[str, str]:
    """`key=value` lines; comments and blank lines skipped, unknown keys ignored."""
    options: dict[str, str] = {}
    for number, raw in enumerate(stream, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            usage_error(f"stdin line {number}: {line!r} is not key=value")
        opt = BY_NAME.get(key)
        if opt is None:
            log.warning("ignoring unknown option %r", key)
            continue
        value = value.strip()
        if opt.flag:
            if value.lower() in _TRUE:
                options[opt.name] = "1"
        else:
            options[opt.name] = value
    return options


def parse_argv(argv: Sequence[str]) -> dict[str, str]:
    shorts = "".join(o.short + ("" if o.flag else ":") for o in OPTIONS if o.short) + "hV"
    longs = [o.long + ("" if o.flag else "=") for o in OPTIONS]
    longs += [a.replace("_", "-") + ("" if BY_NAME[a].flag else "=")
              for o in OPTIONS for a in o.aliases] + ["help", "version"]
    try:
        pairs, rest = getopt.gnu_getopt(list(argv), shorts, longs)
    except getopt.GetoptError as exc:
        usage_error(str(exc))
    if rest:
        usage_error(f"unexpected arguments {rest}")
    options: dict[str, str] = {}
    for flag, value in pairs:
        if flag in ("-h", "--help"):
            print_usage()
            raise SystemExit(EC_OK)
        if flag in ("-V", "--version"):
            from vmha import __version__
            print(__version__)
            raise SystemExit(EC_OK)
        key = flag.lstrip("-").replace("-", "_")
        opt = next(o for o in OPTIONS if key in (o.short, o.name, *o.aliases))
        options[opt.name] = "1" if opt.flag else value
    return options


def print_usage() -> None:
    print("Usage:\n\tfence_vmha [options]\n\t(or key=value lines on stdin)\nOptions:")
    for o in OPTIONS:
        if not o.hidden:
            short = f"-{o.short}, " if o.short else "    "
            value = "" if o.flag else "=[value]"
            print(f"   {short}--{o.long}{value}".ljust(40) + o.desc)


def metadata() -> str:
    """The agent's metadata XML, as Pacemaker's fencer reads it."""
    lines = ['<?xml version="1.0" ?>',
             f'<resource-agent name="fence_vmha" shortdesc={quoteattr(DOCS[0])}>',
             f"<longdesc>{_text(DOCS[1])}</longdesc>", "<parameters>"]
    for o in OPTIONS:
        if o.hidden:
            continue
        for name in (o.name, *o.aliases):
            short = f"-{o.short}, " if o.short else ""
            mixed = f"{short}--{name.replace('_', '-')}" + ("" if o.flag else "=[value]")
            kind = "boolean" if o.flag else ("second" if name.endswith(("_timeout", "_wait"))
                                             or name == "delay" else "string")
            default = f" default={quoteattr(o.default)}" if o.default else ""
            if name != o.name:
                extra = ' deprecated="1"'
            else:
                extra = f' obsoletes="{o.aliases[0]}"' if o.aliases else ""
            lines += [f'\t<parameter name="{name}" unique="0" '
                      f'required="{int(o.required and name == o.name)}"{extra}>',
                      f"\t\t<getopt mixed={quoteattr(mixed)} />",
                      f'\t\t<content type="{kind}"{default} />',
                      f'\t\t<shortdesc lang="en">{_text(o.desc)}</shortdesc>', "\t</parameter>"]
    lines += ["</parameters>", "<actions>"]
    lines += [f'\t<action name="{a}" />' for a in ACTIONS if a != "on"]
    lines += ['\t<action name="on" automatic="0" />', "</actions>", "</resource-agent>"]
    return "\n".join(lines) + "\n"


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _seconds(options: dict[str, str], key: str) -> float:
    try:
        value = float(options.get(key, BY_NAME[key].default))
    except ValueError:
        usage_error(f"{key}: {options[key]!r} is not a number of seconds")
    if value < 0:
        usage_error(f"{key}: must not be negative")
    return value


def validate(options: dict[str, str]) -> None:
    """What every action but metadata needs; usage_error names what lacks."""
    action = options.get("action", "reboot")
    if action not in ACTIONS:
        usage_error(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    if not options.get("ip"):
        usage_error("ip: the vmha API host is required (ip=HOST or --ip HOST)")
    port = options.get("ipport", "")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        usage_error(f"ipport: {port!r} is not a TCP port")
    if not options.get("password") and not options.get("password_script"):
        usage_error("password: a vmha project token is required (password= or "
                    "password_script=)")
    if action in ("on", "off", "reboot", "status") and not options.get("plug"):
        usage_error(f"plug: the instance to {action} is required (plug=INSTANCE_ID)")
    if options.get("method", "onoff") not in ("onoff", "cycle"):
        usage_error("method: must be onoff or cycle")
    for key in ("power_timeout", "power_wait", "shell_timeout", "delay"):
        _seconds(options, key)


def token_of(options: dict[str, str]) -> str:
    if options.get("password"):
        return options["password"]
    try:
        out = subprocess.run(options["password_script"], shell=True, capture_output=True,  # noqa: S602 - the admin's own script
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise Failure(f"password_script failed: {exc}") from exc
    token = out.strip().splitlines()[0] if out.strip() else ""
    if not token:
        raise Failure("password_script printed no token")
    return token


class Api:
    """The few vmha API calls a fence agent makes (JSON over HTTP(S))."""

    def __init__(self, options: dict[str, str], token: str) -> None:
        secure = any(options.get(k) for k in ("ssl", "ssl_insecure", "ssl_secure"))
        port = options.get("ipport") or ("443" if secure else "80")
        host = options["ip"]
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.base = f"{'https' if secure else 'http'}://{host}:{port}"
        self.timeout = _seconds(options, "shell_timeout") or 10.0
        self.context: ssl.SSLContext | None = None
        if secure:
            self.context = ssl.create_default_context()
            if options.get("ssl_insecure"):
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data else {})}
        request = urllib.request.Request(self.base + path, data, headers,  # noqa: S310 - http(s)
                                         method=method)
        log.debug("%s %s %s", method, path, body or "")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,  # noqa: S310 - http(s)
                                        context=self.context) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"null")
            except ValueError:
                answer = None
            return exc.code, answer
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise Failure(f"cannot reach the vmha API at {self.base}: {exc}") from exc

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        if status in (401, 403):
            raise Failure(f"the vmha API refused the token ({status}): "
                          f"{_detail(answer)}; check password")
        if not 200 <= status < 300:
            raise Failure(f"{method} {path}: HTTP {status}: {_detail(answer)}")
        return answer

    def instances(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        marker = ""
        while True:
            query = urllib.parse.urlencode({"limit": 500, **({"marker": marker} if marker
                                                             else {})})
            page = self.ok("GET", f"/v1/instances?{query}")
            found += page["items"]
            marker = page.get("next_marker") or ""
            if not marker or not page["items"]:
                return found

    def instance(self, plug: str) -> dict[str, Any]:
        """By id; else by unique name (within what the token may see)."""
        status, answer = self.call("GET", f"/v1/instances/{urllib.parse.quote(plug, safe='')}")
        if status == 200:
            return dict(answer)
        if status != 404:
            self.ok("GET", f"/v1/instances/{urllib.parse.quote(plug, safe='')}")
        named = [i for i in self.instances() if i["name"] == plug]
        if len(named) != 1:
            why = "no instance" if not named else f"{len(named)} instances"
            raise Failure(f"plug {plug!r}: {why} with this id or name for this token")
        return named[0]


def _detail(answer: Any) -> str:
    return str(answer.get("detail", answer)) if isinstance(answer, dict) else str(answer)


def power_state(instance: dict[str, Any]) -> str:
    """"off" only when vmha recorded it stopped; anything else may run."""
    return "off" if instance.get("state") == "stopped" else "on"


def set_power(api: Api, plug: str, want: str, options: dict[str, str]) -> None:
    """Ask for stop/start and wait until vmha records the instance off/on."""
    inst = api.instance(plug)
    if power_state(inst) == want:
        print(f"Success: Already {want.upper()}")
        return
    action = "stop" if want == "off" else "start"
    path = f"/v1/instances/{urllib.parse.quote(inst['id'], safe='')}"
    deadline = time.monotonic() + _seconds(options, "power_timeout")
    asked, refusal = False, ""
    while time.monotonic() < deadline:
        if not asked:
            status, answer = api.call("POST", f"{path}/actions", {"action": action})
            asked, refusal = status == 202, "" if status == 202 else _detail(answer)
            if status in (401, 403, 404):
                raise Failure(f"{action} of {plug} refused ({status}): {refusal}")
            if refusal:
                log.info("%s of %s not accepted yet: %s", action, plug, refusal)
        inst = api.ok("GET", path)
        if power_state(inst) == want and (want == "off" or inst["state"] == "running"):
            time.sleep(_seconds(options, "power_wait"))
            return
        time.sleep(POLL_S)
    state = inst.get("state")
    raise Failure(f"timed out after {options.get('power_timeout', '60')} s waiting for {plug} "
                  f"to be {want.upper()} (vmha records it {state})"
                  + (f"; last refusal: {refusal}" if refusal else ""))


def reboot(api: Api, plug: str, options: dict[str, str]) -> None:
    if options.get("method", "onoff") == "cycle":
        inst = api.instance(plug)
        api.ok("POST", f"/v1/instances/{urllib.parse.quote(inst['id'], safe='')}/actions",
               {"action": "restart"})
        set_power(api, plug, "on", options)
        return
    set_power(api, plug, "off", options)
    set_power(api, plug, "on", options)


def run(options: dict[str, str]) -> int:
    action = options.get("action", "reboot")
    if action == "metadata":
        print(metadata(), end="")
        return EC_OK
    validate(options)
    if action == "validate-all":
        return EC_OK
    api = Api(options, token_of(options))
    plug = options.get("plug", "")
    if action in ("off", "reboot"):
        time.sleep(_seconds(options, "delay"))
    handlers: dict[str, Callable[[], int | None]] = {
        "on": lambda: set_power(api, plug, "on", options),
        "off": lambda: set_power(api, plug, "off", options),
        "reboot": lambda: reboot(api, plug, options),
        "status": lambda: status(api, plug),
        "list": lambda: listing(api, options, False),
        "list-status": lambda: listing(api, options, True),
        "monitor": lambda: monitor(api),
    }
    result = handlers[action]()
    if action in ("on", "off", "reboot"):
        print("Success: " + {"on": "Powered ON", "off": "Powered OFF",
                             "reboot": "Rebooted"}[action])
    return result or EC_OK


def monitor(api: Api) -> int:
    """The API answers and takes the token."""
    api.ok("GET", "/v1/instances?limit=1")
    return EC_OK


def status(api: Api, plug: str) -> int:
    state = power_state(api.instance(plug))
    print(f"Status: {state.upper()}")
    return EC_STATUS_OFF if state == "off" else EC_OK


def listing(api: Api, options: dict[str, str], with_status: bool) -> None:
    sep = options.get("separator", ",")
    for inst in api.instances():
        fields = [inst["id"], inst["name"]]
        if with_status:
            fields.append(power_state(inst).upper())
        print(sep.join(fields))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    try:
        options = parse_argv(args) if args else parse_stdin(sys.stdin)
        level = logging.DEBUG if options.get("verbose") else logging.WARNING
        logging.getLogger().setLevel(level)
        if options.get("debug_file"):
            handler = logging.FileHandler(options["debug_file"])
            handler.setLevel(logging.DEBUG)
            logging.getLogger().addHandler(handler)
            logging.getLogger().setLevel(logging.DEBUG)
        return run(options)
    except Failure as exc:
        log.error("Failed: %s", exc)
        return EC_FAILED
    except SystemExit as exc:
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
