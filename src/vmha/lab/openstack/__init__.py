"""A real OpenStack cloud for the lab: Keystone, Nova, Placement, Glance,
Ceilometer and Aodh from PyPI, on Debian's MariaDB and RabbitMQ.

- `install`: the services' own venv, outside the repository, keyed by pins.
- `layout`: names, ports, paths and the lab cloud's generated secrets.
- `confs`: the services' configuration files.
- `provision`: MariaDB databases, the RabbitMQ vhost, Keystone and Nova
  bootstrap, and the cache of a bootstrapped cloud (database dumps).
- `services`: starting, waiting for and stopping the root-namespace
  services; the `nova-compute` command each lab host's PID 1 runs.
- `stubs`: the Neutron stub and the AMQP relay onto the lab bridge.
- `cloud`: the lab's calls to the cloud's APIs (servers, status).
- `runtime/`: WSGI entry points loaded by gunicorn *inside the OpenStack
  venv*; never imported by vmha.

Called by `vmha.lab.lab` (`vmha lab up --cloud openstack`), the tests and
the benchmarks. See docs/openstack.md.
"""
