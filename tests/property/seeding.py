"""The property tests' seed: random per run, printed in the report header,
repeatable with VMHA_PROPERTY_SEED=<seed> (issue 11 item 14)."""

from __future__ import annotations

import os
import random

ENV = "VMHA_PROPERTY_SEED"
SEED = int(os.environ.get(ENV) or random.SystemRandom().randrange(2**32))
