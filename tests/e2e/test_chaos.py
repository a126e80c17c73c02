"""The smaller cases of the fault-injection suite (tools/chaos), run as `make chaos` runs them.

Each case is one scenario with a few bots, judged by the same rules as the table: no bot joins
twice, none misses a join it could have made, no status contradicts the meeting server, no
traceback in the operator's log, /healthz never stalls. A failure names the scenario's known
cause and every problem found. The full set, the 30-bot kill storm over five seeds and the
table are `make chaos` (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.harness import Settings
from chaos.runner import Job, execute
from chaos.scenarios import by_name
from chaos.verdicts import summarize
from localcluster.meeting import MeetingServerProcess
from localcluster.testing import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

#: Scenario, bots, seed: small enough for `make test`, each still able to catch its fault.
CASES = [
    ("reschedule-beyond-then-within", 3, 1),
    ("down-past-deadline", 3, 1),
    ("staged-process-killed", 2, 1),
    ("apiserver-frozen", 3, 1),
    ("kill-storm", 8, 1),
    ("leader-killed-at-join", 3, 1),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("scenario", "bots", "seed"), CASES, ids=[case[0] for case in CASES])
def test_scenario(
    scenario: str,
    bots: int,
    seed: int,
    cluster: Cluster,
    crd: None,
    meeting_server: MeetingServerProcess,
    tmp_path: Path,
) -> None:
    settings = Settings(cluster=cluster, meeting=meeting_server, out_dir=tmp_path)
    result = execute(Job(by_name()[scenario], scenario, seed, bots), settings)
    summary = summarize(result)
    if result.outcome.startswith("not applicable"):
        pytest.skip(f"{scenario}: {result.outcome}")
    assert result.ran, f"{scenario}: the run itself broke: {result.outcome} (logs in {tmp_path})"
    problems = "\n  ".join(summary.problems)
    assert summary.passed, (
        f"{scenario} (known cause: {result.hint}):\n  {problems}\n"
        f"lateness p50/p99/max {summary.lateness_p50_ms:.0f}/{summary.lateness_p99_ms:.0f}/"
        f"{summary.lateness_max_ms:.0f} ms, /healthz max {summary.health_max_ms:.0f} ms; operator logs in {tmp_path}"
    )
