"""The vmha host agent: signed heartbeats, peer probes, the agent's HTTP API,
isolation detection and self-fencing through a watchdog, and (optionally)
its host's libvirt: domain operations, events and inventory.

Entry point: `vmha.agent.main.main` (also `python -m vmha.agent`). It must
stay small (< 60 MiB RSS): no FastAPI, no SQLAlchemy, no httpx here.
"""
