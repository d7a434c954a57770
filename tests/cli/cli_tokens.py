"""The bearer tokens of the CLI tests' controller (tests/cli/conftest.py)."""

ADMIN_TOKEN = "cli-admin-s3cret"
VIEWER_TOKEN = "cli-viewer-s3cret"
