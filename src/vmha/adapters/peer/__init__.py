"""Peer probing adapters implementing the `PeerProber` port.

`fake.FakePeerProber` is a scriptable fake for unit tests.
"""
