"""vmha's REST API v1 (FastAPI): `create_app` builds it from its parts.

Entry points (`vmha serve`, tests) call `create_app`; the API talks to the
world only through the ports it is given (Store, Clock, IdGen).
"""

from vmha.api.app import create_app

__all__ = ["create_app"]
