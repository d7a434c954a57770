"""WSGI entry points of the lab cloud's APIs, for gunicorn's factory syntax
(`vmha_os_apps:nova()`).

Loaded by gunicorn *inside the OpenStack venv* (`--pythonpath` this folder);
vmha never imports it. Each service finds its configuration through its own
environment variable (OS_NOVA_CONFIG_DIR, OS_KEYSTONE_CONFIG_DIR, ...) set by
`vmha.lab.openstack.services`. Why wrappers at all: Nova's WSGI app parses
`sys.argv` (gunicorn's own arguments there make it fail), and Aodh's builds
its configuration from an argv it hard-codes as empty.
"""

import os
import sys


def _own_argv():
    sys.argv = sys.argv[:1]


def keystone():
    _own_argv()
    from keystone.wsgi.api import application

    return application


def nova():
    _own_argv()
    from nova.wsgi.osapi_compute import application

    return application


def placement():
    _own_argv()
    from placement.wsgi.api import application

    return application


def glance():
    _own_argv()
    from glance.wsgi.api import application

    return application


def aodh():
    _own_argv()
    from aodh.api import app

    return app.build_wsgi_app(argv=["--config-file", os.environ["VMHA_AODH_CONF"]])
