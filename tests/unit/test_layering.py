"""The layers of DESIGN.md cannot leak (kopf does the same with import-linter).

- `api`: data and validation; imports nothing of the layers above, no I/O libraries.
- `core`: pure decisions; additionally never reads the clock (`now` is passed in).
- only `adapters` talk to the Kubernetes API (`kubernetes_asyncio`).
- `agent` (the in-pod side) never imports the operator's runtime or adapters.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scheduledbot

PACKAGE = Path(scheduledbot.__file__).parent
IO = ("kopf", "kubernetes", "kubernetes_asyncio", "asyncio", "aiohttp", "time")
UPPER = ("scheduledbot.runtime", "scheduledbot.adapters", "scheduledbot.agent")
RULES: dict[str, tuple[str, ...]] = {
    "api": (*IO, "scheduledbot.core", *UPPER),
    "core": (*IO, *UPPER),
    "runtime": ("kubernetes_asyncio", "kubernetes", "scheduledbot.agent"),
    "agent": ("kopf", "kubernetes", "kubernetes_asyncio", "scheduledbot.runtime", "scheduledbot.adapters"),
    "adapters": ("kopf", "scheduledbot.runtime", "scheduledbot.agent"),
}
CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


CASES = [(layer, path) for layer in RULES for path in _modules(layer)]


@pytest.mark.parametrize(("layer", "path"), CASES, ids=[f"{layer}/{p.name}" for layer, p in CASES])
def test_a_module_imports_nothing_its_layer_must_not(layer: str, path: Path) -> None:
    forbidden = RULES[layer]
    imported = _imports(ast.parse(path.read_text()))
    bad = {name for name in imported if any(name == f or name.startswith(f"{f}.") for f in forbidden)}
    assert not bad, f"{layer}/{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: p.name)
def test_core_never_reads_the_clock(path: Path) -> None:
    calls = [
        node.func.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_READS
    ]
    assert not calls, f"core/{path.name} reads the clock: {calls}"
