"""`python -m vmha.agent --config agent.toml`: the agent without the CLI."""

from __future__ import annotations

import sys

from vmha.agent.main import main

sys.exit(main())
