"""`python -m chaos` (`make chaos`): the fault-injection suite on the local cluster; prints its table.

Starts (or reuses) the local cluster, applies the CRD, runs a local meeting server, then each
scenario in its own namespace with its own operator process(es), within --budget seconds.
Exit code 0 when every scenario that ran passed, 1 otherwise (n/a and skipped do not fail).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from chaos import report
from chaos.harness import Settings
from chaos.runner import Job, run_all
from chaos.scenarios import KILL_STORM, SCENARIOS, by_name
from chaos.verdicts import summarize
from localcluster import cluster
from localcluster.bots import install_crd
from localcluster.meeting import MeetingServerProcess
from localcluster.testing import Cluster

log = logging.getLogger("chaos")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = ", ".join(by_name())
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    p.add_argument("--budget", type=float, default=900, help="seconds for all scenarios (default %(default)s)")
    p.add_argument("--seeds", default="1,2,3,4,5", help="kill storm seeds, comma-separated (default %(default)s)")
    p.add_argument("--scenarios", default="", help=f"comma-separated subset (default: all): {names}")
    p.add_argument("--bots", type=int, help="bots per scenario (default: the scenario's, 30 for the kill storm)")
    p.add_argument("--replicas", type=int, default=2, help="operator replicas of the leader scenarios")
    p.add_argument(
        "--replica-args",
        default=Settings.__dataclass_fields__["replica_args"].default,
        help="extra arguments of each replica; {namespace} is the scenario's (default: %(default)r)",
    )
    p.add_argument(
        "--leader-metric",
        default=Settings.__dataclass_fields__["leader_metric"].default,
        help="gauge that reads 1 on the leader (default: %(default)s)",
    )
    p.add_argument("--operator-arg", action="append", default=[], metavar="ARG", help="extra operator flag, repeatable")
    p.add_argument("--health-limit", type=float, default=2.0, help="/healthz latency counted as a stall, seconds")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    p.add_argument("--out", default=str(cluster.REPO_ROOT / "chaos-out"), help="operator logs (git-ignored)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p.parse_args(argv)


def jobs(args: argparse.Namespace) -> list[Job]:
    wanted = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    known = by_name()
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"--scenarios: unknown {', '.join(unknown)}; expected some of {', '.join(known)}")
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    selected = [KILL_STORM, *SCENARIOS] if not wanted else [known[name] for name in wanted]
    result: list[Job] = []
    for chosen in selected:
        scenario = dataclasses.replace(chosen, replicas=args.replicas) if chosen.replicas > 1 else chosen
        bots = args.bots or scenario.bots
        if scenario.name == KILL_STORM.name:
            result.extend(Job(scenario, f"{scenario.name}-seed{seed}", seed, bots) for seed in seeds)
        else:
            result.append(Job(scenario, scenario.name, seeds[0] if seeds else 1, bots))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s chaos: %(message)s", stream=sys.stderr)
    if args.list:
        for scenario in by_name().values():
            print(f"{scenario.name:30} {(scenario.act.__doc__ or '').strip().splitlines()[0]}")
        return 0
    todo = jobs(args)
    cluster.up()
    kube = Cluster()
    install_crd(kube)
    began = time.time()
    with MeetingServerProcess() as meeting:
        settings = Settings(
            cluster=kube,
            meeting=meeting,
            out_dir=Path(args.out),
            operator_args=tuple(args.operator_arg),
            replica_args=args.replica_args,
            leader_metric=args.leader_metric,
            health_limit=args.health_limit,
        )
        results = run_all(todo, settings, budget=args.budget)
    summaries = [summarize(result) for result in results]
    print(report.table(summaries))
    if args.json:
        meta = {"started": began, "seconds": time.time() - began, "argv": sys.argv[1:]}
        Path(args.json).write_text(report.to_json(summaries, meta))
    for result in results:
        for note in result.notes:
            log.info("%s: %s", result.name, note)
    return 1 if any(summary.passed is False for summary in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
