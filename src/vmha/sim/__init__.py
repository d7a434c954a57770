"""Deterministic simulation: the real controller logic against simulated
hosts, agents, BMCs, network and VMs on a virtual clock.

May import anything below it (engine, adapters, ports, domain). Never uses
real time, real sockets or real randomness (a seeded `random.Random`).
"""
