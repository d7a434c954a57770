"""The lab cloud's two small helpers, in one process on the lab bridge:

- a **Neutron stub**: Nova calls Neutron even for servers created with
  `networks: none` (listing ports when it evacuates or deletes them). Every
  `GET /v2.0/<things>` answers `{"<things>": []}`, `GET /` a version list,
  anything else 404. The lab has no Neutron; vmha never talks to this.
- an **AMQP relay**: the machine's RabbitMQ listens on 127.0.0.1 only, which
  the hosts' network namespaces cannot reach. The relay accepts on the
  bridge (198.18.0.1:5672) and pipes each connection to the broker, byte
  for byte, so a host whose link is cut loses its broker connection like a
  real compute would. The broker, not the relay, authenticates.

`python -m vmha.lab.openstack.stubs --neutron ADDR:PORT --relay
ADDR:PORT=HOST:PORT --mark DIR`. Standard library only (asyncio streams;
the stub's HTTP is the one parser of `vmha.adapters.httpwire`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from vmha.adapters import httpwire


def neutron_answer(method: str, path: str) -> tuple[int, object]:
    """Status and JSON body for one request to the stub."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if method != "GET":
        return 404, {"NeutronError": {"type": "NotSupported",
                                      "message": "the vmha lab has no Neutron"}}
    if not parts:
        return 200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": []}]}
    if parts[0] == "v2.0" and len(parts) == 2:
        resource = parts[1].removesuffix(".json")
        return 200, {resource: []}
    return 404, {"NeutronError": {"type": "NotFound", "message": f"{path} not found"}}


async def _neutron(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:  # kept alive, as Nova's client expects
            request = await httpwire.read_request(reader, httpwire.LAB_STUB_BODY_MAX)
            status, body = neutron_answer(request.method, request.target)
            writer.write(httpwire.encode_response(
                status, {"Content-Type": "application/json"}, json.dumps(body).encode()))
            await writer.drain()
    except (httpwire.Closed, httpwire.ProtocolError, ConnectionError):
        pass
    finally:
        writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except ConnectionError:
        pass
    finally:
        dst.close()


def relay_handler(host: str, port: int):  # type: ignore[no-untyped-def]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return handle


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(neutron: str, relays: list[str]) -> None:
    servers = [await httpwire.serve(_neutron, *_addr(neutron))]
    for spec in relays:
        listen, _, target = spec.partition("=")
        servers.append(await asyncio.start_server(relay_handler(*_addr(target)),
                                                  *_addr(listen)))
    print(f"vmha lab stubs: neutron on {neutron}, relays {relays}", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmha.lab.openstack.stubs")
    parser.add_argument("--neutron", required=True, help="ADDR:PORT of the Neutron stub")
    parser.add_argument("--relay", action="append", default=[], help="ADDR:PORT=HOST:PORT")
    parser.add_argument("--mark", default="", help="the lab directory (to find us again)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.neutron, args.relay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
