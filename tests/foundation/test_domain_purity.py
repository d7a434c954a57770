"""The domain imports only the standard library (DESIGN.md, STYLE.md #1).

import-linter enforces the layer order between vmha's packages; this test
checks the stronger rule that domain/ pulls in nothing outside the stdlib.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import vmha.domain

DOMAIN = Path(vmha.domain.__file__).parent
FORBIDDEN_CALLS = {"time.time", "time.monotonic", "uuid.uuid4", "asyncio.sleep"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_domain_imports_only_stdlib_and_itself() -> None:
    offenders = []
    for path in sorted(DOMAIN.rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("vmha.domain") or top in sys.stdlib_module_names:
                continue
            offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_domain_never_reads_the_clock_or_makes_ids() -> None:
    offenders = []
    for path in sorted(DOMAIN.rglob("*.py")):
        imported = _imports(path)
        assert "asyncio" not in imported, f"{path.name} imports asyncio"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                dotted = f"{node.value.id}.{node.attr}"
                if dotted in FORBIDDEN_CALLS:
                    offenders.append(f"{path.name}:{node.lineno} {dotted}")
    assert offenders == []
