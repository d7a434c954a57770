"""vmha keeps virtual machines running.

It detects host, guest-OS and application failures, fences what must be
fenced, and recovers (or only notifies, for users who run their own
recovery). See docs/ and DESIGN.md for the architecture.
"""

__version__ = "0.1.0"
