"""`api`, `core` and the protocol never read the clock: `now` is passed in, so every decision is a table test.

The import rules of the layers are import-linter contracts (pyproject.toml, `make lint`);
a call such as `datetime.now()` imports nothing new, so it is checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scheduledbot

PACKAGE = Path(scheduledbot.__file__).parent
PURE = sorted(
    [*PACKAGE.glob("api/*.py"), *PACKAGE.glob("core/*.py"), PACKAGE / "protocol.py", PACKAGE / "timestamps.py"]
)
CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_never_reads_the_clock(path: Path) -> None:
    calls = [
        node.func.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_READS
    ]
    assert not calls, f"{path.relative_to(PACKAGE)} reads the clock: {calls}"
