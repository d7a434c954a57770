"""Several controllers in the lab (`vmha lab up --controllers N`, issue 15).

N `vmha serve` processes, each in a network namespace of its own
(`vmha-ctlN`, root-side veth `vmha-cN` into the lab bridge, `eth0` inside
carrying 198.18.0.(240+N) and, on the VM network, 198.18.1.(1+N)), sharing
one PostgreSQL database (`vmha_lab`, reached through the server's Unix
socket, which no network namespace cuts) and one 3-member etcd cluster
(Debian's etcd-server, `vmha.lab.etcd`) on the bridge's 198.18.0.1, ports
23771-23773. The agents list every controller (heartbeats go to all, API
calls to the next one that answers); the BMC emulators listen on the
bridge's address so every controller can fence.

Faults (`vmha lab fail controllerN FAULT`), recorded in lab.json first:
- `power-off`: its NIC goes down (silent), then `vmha serve` is SIGKILLed;
  `vmha lab power-on controllerN` starts it again (also after a kill);
- `network-down`: its switch port (root-side veth) down: cut from etcd,
  the hosts, the BMCs and the API's clients (not from the store's socket);
- `etcd-link-down`: iptables in its namespace drop its etcd traffic only;
- `hosts-link-down`: iptables in its namespace drop everything to and from
  the lab's networks (hosts, guests, the other controllers) except
  198.18.0.1 (etcd, BMCs, the API's clients in the root namespace): cut
  off from the hosts, not from etcd.
`vmha lab heal controllerN` undoes the last three. `vmha lab fail etcdN
power-off` / `power-on etcdN` stop and start one etcd member (two down:
no quorum).

Only the leader runs detection and recovery (every controller receives the
heartbeats; heartbeat sharding is not done, docs/controllers.md), so the
status block shows every lab host as owned by the leader.

Called by `vmha.lab.lab` (up, status), `vmha.lab.faults` (fail, heal,
power-on, down) and `vmha.lab.vms` (which controller to ask).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vmha.domain.ring import Ring
from vmha.errors import Conflict, NotFound, ValidationError
from vmha.lab import net, state
from vmha.lab.controller import (
    SERVE_MARKER,
    api_request,
    create_segment,
    vmha_script,
    wait_healthy,
    write_config,
)
from vmha.lab.etcd import EtcdCluster

NETNS_PREFIX = "vmha-ctl"
VETH_PREFIX = "vmha-c"
MAX_CONTROLLERS = 5
ETCD_MEMBERS = 3
ETCD_CLIENT_PORT = 23771  # member i: 23771 + i on the bridge address (below 32768)
ETCD_PEER_PORT = 23871
ETCD_MARK = "etcd"
ETCD_PREFIX = "/vmha-lab"
DATABASE = "vmha_lab"
PG_SOCKET = "/var/run/postgresql"
FAULTS = ("power-off", "network-down", "etcd-link-down", "hosts-link-down")
LAB_NETS = "198.18.0.0/23"  # hosts and controllers (198.18.0.x), guests (198.18.1.x)
START_TIMEOUT_S = 60.0


def netns_name(index: int) -> str:
    return f"{NETNS_PREFIX}{index}"


def veth_name(index: int) -> str:
    return f"{VETH_PREFIX}{index}"


def address(index: int) -> str:
    return f"198.18.0.{240 + index}"


def vm_net_address(index: int) -> str:
    """On the VM network (the guests' health checks): below the VMs' .11-.110."""
    return f"198.18.1.{1 + index}"


def is_member(st: dict[str, Any], name: str) -> bool:
    return name in st.get("controllers", {}) or name in st.get("etcd", {}).get("members", {})


# -- the network of one controller -------------------------------------------


def _create_net(index: int) -> None:
    ns, veth = netns_name(index), veth_name(index)
    if ns not in net.list_netns():
        net.run(["ip", "netns", "add", ns])
    if not net.link_exists(veth):
        net.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p"])
        net.run(["ip", "link", "set", f"{veth}p", "netns", ns])
        net.run(["ip", "-n", ns, "link", "set", f"{veth}p", "name", net.NIC])
    net.run(["ip", "link", "set", veth, "master", net.BRIDGE])
    net.run(["ip", "link", "set", veth, "up"])
    inside = ["ip", "-n", ns]
    shown = net.run([*inside, "-o", "addr", "show", "dev", net.NIC])
    for addr in (f"{address(index)}/{net.PREFIX_LEN}", f"{vm_net_address(index)}/24"):
        if f" {addr} " not in shown:
            net.run([*inside, "addr", "add", addr, "dev", net.NIC])
    for dev in ("lo", net.NIC):
        net.run([*inside, "link", "set", dev, "up"])


def _delete_net(index: int) -> None:
    if net.link_exists(veth_name(index)):
        net.run(["ip", "link", "del", veth_name(index)], check=False)
    if netns_name(index) in net.list_netns():
        net.run(["ip", "netns", "del", netns_name(index)], check=False)


def _set_nic(index: int, up: bool) -> None:
    net.run(["ip", "-n", netns_name(index), "link", "set", net.NIC, "up" if up else "down"])


def _set_port(index: int, up: bool) -> None:
    net.run(["ip", "link", "set", veth_name(index), "up" if up else "down"])


def _etcd_rules() -> list[list[str]]:
    ports = f"{ETCD_CLIENT_PORT}:{ETCD_CLIENT_PORT + ETCD_MEMBERS - 1}"
    return [["OUTPUT", "-d", net.BRIDGE_ADDR, "-p", "tcp", "--dport", ports, "-j", "DROP"],
            ["INPUT", "-s", net.BRIDGE_ADDR, "-p", "tcp", "--sport", ports, "-j", "DROP"]]


def _hosts_rules() -> list[list[str]]:
    """Inserted in this order (-I): the ACCEPT of 198.18.0.1 ends up above the DROP."""
    return [["OUTPUT", "-d", LAB_NETS, "-j", "DROP"],
            ["OUTPUT", "-d", net.BRIDGE_ADDR, "-j", "ACCEPT"],
            ["INPUT", "-s", LAB_NETS, "-j", "DROP"],
            ["INPUT", "-s", net.BRIDGE_ADDR, "-j", "ACCEPT"]]


# -- etcd and the store --------------------------------------------------------


def _etcd(lab_dir: Path) -> EtcdCluster:
    return EtcdCluster(lab_dir / "etcd", ETCD_MEMBERS, address=net.BRIDGE_ADDR,
                       client_port=ETCD_CLIENT_PORT, peer_port=ETCD_PEER_PORT,
                       cluster_token=f"vmha-lab-{secrets.token_hex(4)}")


def _start_etcd(lab_dir: Path, st: dict[str, Any]) -> None:
    cluster = _etcd(lab_dir)
    st["etcd"] = {"url": cluster.url + ETCD_PREFIX, "dir": str(cluster.base_dir),
                  "token": cluster.cluster_token,
                  "members": {m.name: {"pid": None, "client_url": m.client_url,
                                       "data_dir": str(m.data_dir), "log": str(m.log_path)}
                              for m in cluster.members}}
    cluster.base_dir.mkdir(parents=True, exist_ok=True)
    for m in cluster.members:
        _start_member(lab_dir, st, m.name, cluster)
    cluster.wait_healthy()


def _start_member(lab_dir: Path, st: dict[str, Any], name: str,
                  cluster: EtcdCluster | None = None) -> int:
    rec = st["etcd"]["members"][name]
    if rec.get("pid") and net.alive(rec["pid"]) and net.owned_by_lab(
            rec["pid"], ETCD_MARK, rec["data_dir"]):
        raise Conflict(f"etcd member {name} is already running")
    if cluster is None:
        cluster = _etcd(lab_dir)
        cluster.cluster_token = st["etcd"]["token"]
    rec["pid"] = net.spawn_detached(cluster.command(name), Path(rec["log"]))
    state.save(lab_dir, st)
    return int(rec["pid"])


def _stop_member(rec: dict[str, Any]) -> list[int]:
    pid = rec.get("pid")
    if pid and net.kill(pid, ETCD_MARK, rec["data_dir"]):
        net.wait_gone([pid])
        return [int(pid)]
    return []


def _admin_url() -> str:
    return f"postgresql+psycopg://root@/postgres?host={PG_SOCKET}"


def store_url() -> str:
    return f"postgresql+psycopg://root@/{DATABASE}?host={PG_SOCKET}"


def _database(create: bool) -> None:
    """Drop the lab's database (forcing its sessions out) and, with `create`,
    make it anew: every lab starts from an empty store."""
    import sqlalchemy as sa

    engine = sa.create_engine(_admin_url(), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool,
                              connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            if create:
                conn.exec_driver_sql(f'CREATE DATABASE "{DATABASE}"')
    except sa.exc.OperationalError as exc:
        if create:
            raise net.LabCommandFailed(
                f"PostgreSQL on {PG_SOCKET} does not answer ({exc.orig}); "
                "scripts/ensure-postgres.sh starts it") from exc
    finally:
        engine.dispose()


# -- the controllers -----------------------------------------------------------


def up(lab_dir: Path, st: dict[str, Any], count: int, lease_s: float,
       bmcs: dict[str, Any]) -> None:
    """Start etcd, the store and `count` controllers; wait for a leader and
    create the lab's segment. Everything is recorded in lab.json first."""
    script = vmha_script()
    if script is None:
        raise net.LabCommandFailed("vmha serve is not available in this build")
    settings, tokens = st["settings"], {"admin": st["controller"]["token"],
                                        "agent": secrets.token_urlsafe(24)}
    st["controllers"] = {}
    st["store"] = {"url": store_url(), "database": DATABASE}
    state.save(lab_dir, st)
    _database(create=True)
    _start_etcd(lab_dir, st)
    key = lab_dir / "controllers" / "secret.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    from cryptography.fernet import Fernet

    key.write_bytes(Fernet.generate_key())
    key.chmod(0o600)
    for i in range(1, count + 1):
        name = f"controller{i}"
        cdir = lab_dir / "controllers" / name
        url = f"http://{address(i)}:{settings['controller_port']}"
        coordination = (f"[coordination]\nurl = {json.dumps(st['etcd']['url'])}\n"
                        f'name = "{name}"\napi_url = "{url}"\nlease_s = {lease_s}\n')
        cfg = write_config(cdir, address(i), settings["controller_port"], tokens, settings,
                           bmcs, store_url=store_url(), fencing={"secret_key_file": str(key)},
                           extra=coordination)
        st["controllers"][name] = {"index": i, "url": url, "address": address(i),
                                   "netns": netns_name(i), "veth": veth_name(i),
                                   "config": str(cfg), "pid": None, "faults": []}
        state.save(lab_dir, st)
        _create_net(i)
    first, *rest = st["controllers"]
    _start(lab_dir, st, first)  # alone: it applies the store's migrations
    for name in rest:
        _start(lab_dir, st, name, wait=False)
    for name in rest:
        _wait_up(st["controllers"][name])
    leader = wait_leader(st)
    create_segment(st["controllers"][leader]["url"], tokens["admin"], st["segment"])
    st["controller"] = {"url": st["controllers"][first]["url"], "token": tokens["admin"],
                        "agent_token": tokens["agent"], "pid": None, "healthy": True,
                        "several": sorted(st["controllers"])}
    state.save(lab_dir, st)


def _start(lab_dir: Path, st: dict[str, Any], name: str, wait: bool = True) -> int:
    c = st["controllers"][name]
    script = vmha_script()
    assert script is not None
    cmd = ["ip", "netns", "exec", c["netns"], script, "serve", "--config", c["config"]]
    c["pid"] = net.spawn_detached(cmd, Path(c["config"]).parent / "serve.log")
    state.save(lab_dir, st)
    if wait:
        _wait_up(c)
    return int(c["pid"])


def _wait_up(c: dict[str, Any]) -> None:
    if not wait_healthy(c["url"], START_TIMEOUT_S):
        raise net.LabCommandFailed(f"controller at {c['url']} did not start; see "
                                   f"{Path(c['config']).parent}/serve.log")


def _running(c: dict[str, Any]) -> bool:
    pid = c.get("pid")
    return pid is not None and net.alive(pid) and net.owned_by_lab(pid, SERVE_MARKER,
                                                                   c["config"])


def _stopped(pid: int) -> bool:
    """Paused (SIGSTOP): state T in /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def _group(c: dict[str, Any], token: str, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """The controller's GET /v1/controllers; None when it does not answer."""
    if not _running(c) or _stopped(c["pid"]):
        return None
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
        got: dict[str, Any] = api_request(c["url"], token, "GET", "/v1/controllers",
                                          timeout_s=timeout_s)
        return got
    return None


def groups(st: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Every controller's own view of the group, asked in parallel."""
    token = st["controller"]["token"]
    ctls = st.get("controllers", {})
    with ThreadPoolExecutor(max_workers=max(1, len(ctls))) as pool:
        views = list(pool.map(lambda c: _group(c, token), ctls.values()))
    return dict(zip(ctls, views, strict=True))


def leader_of(views: dict[str, dict[str, Any] | None]) -> str | None:
    """The controller that says it leads (it holds a store epoch)."""
    return next((n for n, v in views.items() if v is not None and v.get("epoch", 0) > 0), None)


def wait_leader(st: dict[str, Any], timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = leader_of(groups(st))
        if found is not None:
            return found
        time.sleep(0.2)
    raise net.LabCommandFailed(f"no controller leads after {timeout_s:g} s; see "
                               f"{st['dir']}/controllers/*/serve.log")


def api_url(st: dict[str, Any]) -> str:
    """A controller URL that should answer: the first one running, not
    paused and not cut off (any controller forwards changes to the leader)."""
    for c in st.get("controllers", {}).values():
        if _running(c) and not _stopped(c["pid"]) and not c["faults"]:
            return str(c["url"])
    raise Conflict("no lab controller is running uncut; `vmha lab power-on controllerN`")


def _shares(views: dict[str, dict[str, Any] | None], lead: str | None,
            hosts: Any) -> dict[str, list[str]]:
    """Each controller's lab hosts on the hash ring of the group as the
    leader (else any controller that answers) sees it (vmha.domain.ring)."""
    view = views.get(lead or "") or next((v for v in views.values() if v is not None), None)
    if view is None:
        return {}
    return Ring(m["name"] for m in view.get("members", [])).shares(hosts)


def status(st: dict[str, Any]) -> dict[str, Any]:
    """`vmha lab status --json`'s "controllers" block and the etcd members."""
    views = groups(st)
    lead = leader_of(views)
    shares = _shares(views, lead, st["hosts"])
    block = {}
    for name, c in st.get("controllers", {}).items():
        running = _running(c)
        block[name] = {
            "url": c["url"], "leader": name == lead, "pid": c["pid"] if running else None,
            "state": ("powered-off" if not running else
                      "paused" if _stopped(c["pid"]) else "running"),
            "answers": views[name] is not None,
            "epoch": (views[name] or {}).get("epoch"),
            # every controller receives heartbeats and judges its share
            "owned_hosts": shares.get(name, []),
            "netns": c["netns"], "address": c["address"],
            "faults": [f["kind"] for f in c["faults"]],
        }
    members = {n: {"client_url": m["client_url"],
                   "running": bool(m.get("pid")) and net.alive(m["pid"])}
               for n, m in st["etcd"]["members"].items()}
    return {"controllers": block, "etcd": {"url": st["etcd"]["url"], "members": members},
            "store": st["store"]}


# -- faults --------------------------------------------------------------------


def fail(lab_dir: Path, st: dict[str, Any], name: str, fault: str) -> dict[str, Any]:
    """Inject `fault` into controller `name` (or power-off into etcd member `name`)."""
    at = time.time()
    if name in st["etcd"]["members"]:
        if fault != "power-off":
            raise ValidationError("fault", f"{fault!r}: an etcd member takes power-off only")
        killed = _stop_member(st["etcd"]["members"][name])
        if not killed:
            raise Conflict(f"etcd member {name} is not running")
        return {"etcd": name, "fault": fault, "at": at, "killed": killed}
    if fault not in FAULTS:
        raise ValidationError("fault", f"{fault!r}: a controller takes {', '.join(FAULTS)}")
    c = st["controllers"][name]
    if fault == "power-off":
        if not _running(c):
            raise Conflict(f"{name} is not running; use `vmha lab power-on {name}`")
        _set_nic(c["index"], up=False)  # silent first, like a host's power-off
        pid = c["pid"]
        net.kill(pid, SERVE_MARKER, c["config"])
        net.wait_gone([pid])
        return {"controller": name, "fault": fault, "at": at, "killed": [pid]}
    record: dict[str, Any] = {"kind": fault}
    if fault == "etcd-link-down":
        record["rules"] = _etcd_rules()
    if fault == "hosts-link-down":
        record["rules"] = _hosts_rules()
    c["faults"].append(record)
    state.save(lab_dir, st)
    if fault == "network-down":
        _set_port(c["index"], up=False)
    for rule in record.get("rules", []):
        net.iptables(c["netns"], "-I", rule)
    return {"controller": name, "fault": fault, "at": at}


def heal(lab_dir: Path, st: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in st["controllers"]:
        raise NotFound("lab controller", name)
    c = st["controllers"][name]
    healed = []
    for fault in c["faults"]:
        if fault["kind"] == "network-down":
            _set_port(c["index"], up=True)
        for rule in fault.get("rules", []):
            with contextlib.suppress(net.LabCommandFailed):
                net.iptables(c["netns"], "-D", rule)
        healed.append(fault["kind"])
    c["faults"] = []
    state.save(lab_dir, st)
    return {"controller": name, "healed": healed}


def power_on(lab_dir: Path, st: dict[str, Any], name: str) -> dict[str, Any]:
    """Start a powered-off (or killed) controller, or a stopped etcd member."""
    if name in st["etcd"]["members"]:
        pid = _start_member(lab_dir, st, name)
        return {"etcd": name, "pid": pid}
    c = st["controllers"][name]
    if _running(c):
        raise Conflict(f"{name} is already running")
    _set_nic(c["index"], up=True)
    pid = _start(lab_dir, st, name, wait=not c["faults"])
    return {"controller": name, "pid": pid}


def down(lab_dir: Path, st: dict[str, Any]) -> tuple[list[int], list[str]]:
    """Kill the controllers and etcd, remove their namespaces, drop the
    database; also what a lab whose lab.json is gone left (by name)."""
    killed = []
    for c in st.get("controllers", {}).values():
        if c.get("pid") and net.kill(c["pid"], SERVE_MARKER, c["config"]):
            killed.append(c["pid"])
    etcd_dir = f"{lab_dir.resolve() / 'etcd'}/"
    for entry in Path("/proc").iterdir():  # the lab's etcd members, by data dir
        if entry.name.isdigit() and net.kill(int(entry.name), ETCD_MARK, etcd_dir):
            killed.append(int(entry.name))
    for ns in net.list_netns():
        if ns.startswith(NETNS_PREFIX):
            pids = net.run(["ip", "netns", "pids", ns], check=False).split()
            killed += [int(p) for p in pids if p.isdigit() and net.kill(int(p), "vmha")]
    net.wait_gone(killed)
    removed = []
    indexes = {c["index"] for c in st.get("controllers", {}).values()}
    indexes |= {int(ns.removeprefix(NETNS_PREFIX)) for ns in net.list_netns()
                if ns.startswith(NETNS_PREFIX) and ns.removeprefix(NETNS_PREFIX).isdigit()}
    for i in sorted(indexes):
        if net.link_exists(veth_name(i)) or netns_name(i) in net.list_netns():
            _delete_net(i)
            removed += [netns_name(i), veth_name(i)]
    if st.get("store", {}).get("database"):
        _database(create=False)
    return killed, removed
