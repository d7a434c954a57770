"""Cloud adapters (libvirt, OpenStack) implementing the `Cloud` port.

`fake.FakeCloud` is a scriptable fake for unit tests.
"""
