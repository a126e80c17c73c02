"""scheduledbot.api stays pure data and validation: no kopf, no Kubernetes
client, no asyncio, and nothing from the layers above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scheduledbot.api

API_DIR = Path(scheduledbot.api.__file__).parent
FORBIDDEN = (
    "kopf",
    "kubernetes",
    "kubernetes_asyncio",
    "asyncio",
    "aiohttp",
    "scheduledbot.core",
    "scheduledbot.runtime",
    "scheduledbot.adapters",
    "scheduledbot.agent",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(API_DIR.glob("*.py")), ids=lambda path: path.name)
def test_an_api_module_imports_no_higher_layer(path: Path) -> None:
    bad = {name for name in _imports(path) if any(name == f or name.startswith(f"{f}.") for f in FORBIDDEN)}
    assert not bad, f"{path.name} imports {sorted(bad)}"
