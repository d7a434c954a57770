"""The vmha lab: a real cluster of hosts in network and PID namespaces on one
machine, with real fault injection (see `vmha.lab.lab` and docs/lab.md).

Kept import-free: `python -m vmha.lab.reaper` runs as every host's PID 1.
"""
