"""Runs scenarios one after another within a time budget; each run leaves nothing behind.

A scenario that cannot apply (no leader election) is reported as such, one that breaks the
harness as an error with its cause; neither stops the others. The budget is checked before
each scenario against its estimate, so `make chaos` ends in bounded time.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

from chaos.harness import NotApplicable, Run, Settings
from chaos.scenarios import Scenario
from chaos.verdicts import ScenarioResult

log = logging.getLogger("chaos")


@dataclass(frozen=True)
class Job:
    """One scenario to run: which, under what name, with which seed and how many bots."""

    scenario: Scenario
    name: str
    seed: int
    bots: int


def execute(job: Job, settings: Settings) -> ScenarioResult:
    """Run one scenario to its verdict's records; never raises for what the scenario found."""
    scenario = job.scenario
    run = Run(settings, job.name)
    outcome = "ran"
    try:
        run.open(replicas=scenario.replicas)
        scenario.act(run, random.Random(job.seed), job.bots)
        result = run.finish(settle=scenario.settle)
    except NotApplicable as error:
        outcome, result = f"not applicable: {error}", run.result()
    except Exception as error:
        log.error("%s: %s\n%s", job.name, error, traceback.format_exc())
        outcome, result = f"error: {type(error).__name__}: {error}", run.result()
    finally:
        run.close()
    return dataclasses.replace(result, outcome=outcome, hint=scenario.hint)


def run_all(jobs: Sequence[Job], settings: Settings, *, budget: float) -> list[ScenarioResult]:
    """Each job in turn while the budget allows; the ones it does not are reported as skipped."""
    deadline = time.monotonic() + budget
    results = []
    for job in jobs:
        left = deadline - time.monotonic()
        if left < job.scenario.estimate:
            results.append(
                ScenarioResult(name=job.name, outcome=f"skipped: {left:.0f} s of budget left", hint=job.scenario.hint)
            )
            continue
        log.info("%s: running (seed %d, %d bots, %.0f s of budget left)", job.name, job.seed, job.bots, left)
        result = execute(job, settings)
        log.info("%s: %s in %.0f s", job.name, result.outcome, result.seconds)
        results.append(result)
    return results
