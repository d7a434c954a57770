"""Fencing adapters: one `Fencer` per power method (ipmi, redfish, fence_agent).

`agent_watchdog` and `manual` are not Fencers: the engine decides them.
`fake.FakeFencer` is a scriptable fake for unit tests.
"""
