"""The operator's dashboard, served by the controller (vmha.web.pages)."""

from vmha.web.pages import install

__all__ = ["install"]
