"""The controller's application layer: the composition root and the inbox.

`vmha.controller.inbox.Inbox` is the one door into controller state: the
API, the agents' reports and the simulator send it typed commands
(vmha.domain.commands) and the engine, which drains it, is the only
writer of hosts' states, jobs and instances' observed state.

The composition root: `compose.build_controller(settings)` opens the store
and builds the API app and the `service.Service` whose lifespan runs the
engine (while this controller leads: `leadership`, with every fence and
cloud change checked against the lease by `authority`), the heartbeat
intake and the webhook dispatcher; `fencers` resolves each host's BMC into
the power fencers, `openstack` logs in to the cloud and syncs its inventory
through the inbox. `vmha serve` (vmha.cli.server) only parses its options
and starts what `compose` built. compose and service sit above the API and
the dashboard they assemble; the other modules below them (pyproject's
import-linter layers).
"""
