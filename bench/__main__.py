"""`python -m bench [--full]`: join precision vs the naive fan-out, scale while waiting, API cost."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

from bench.kube import Kube
from bench.processes import ROOT, apply_crds

log = logging.getLogger("bench")


class Mode(TypedDict):
    """How much a run measures, and within which time budget (seconds)."""

    sizes: list[int]
    runs: dict[int, int]
    scale: int
    idle: float
    budget: float
    scale_reserve: float
    #: Seconds ahead of joinAt the bots are created (the default lead stages them); None: at once.
    ahead: float | None


QUICK: Mode = {
    "sizes": [1, 100, 1000],
    "runs": {1: 3, 100: 3, 1000: 1},
    "scale": 2000,
    "idle": 30,
    "budget": 600,
    "scale_reserve": 150,
    "ahead": None,
}
FULL: Mode = {
    "sizes": [1, 100, 1000, 5000],
    "runs": {1: 5, 100: 5, 1000: 3, 5000: 1},
    "scale": 10000,
    "idle": 60,
    # The 5,000-bot run alone takes about 20 minutes (created 10 minutes ahead).
    "budget": 5400,
    "scale_reserve": 420,
    # The 5,000-bot run is created 10 minutes ahead with the default staging lead.
    "ahead": 600,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--full", action="store_true", help="full mode: also 5,000 bots, 10,000 waiting, more runs")
    p.add_argument("--sizes", help="comma-separated bot counts sharing one joinAt (default by mode)")
    p.add_argument("--runs", type=int, help="runs per size (default by mode: more for small sizes)")
    p.add_argument("--scale", type=int, help="ScheduledBots waiting in `scheduled` (default 2,000; full 10,000)")
    p.add_argument("--idle", type=float, help="idle window in seconds for the CPU measure (default 30; full 60)")
    p.add_argument(
        "--scale-template",
        action="store_true",
        help="the waiting bots carry the bench's Pod template (default: none, the operator's applies)",
    )
    p.add_argument(
        "--operator-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra operator flag, repeatable (experiments, e.g. --operator-arg=--no-webhook)",
    )
    p.add_argument(
        "--without-webhook",
        action="store_true",
        help="experiment: delete the operator's webhook configuration once it runs, so that creates "
        "skip the admission webhook (scale phase)",
    )
    p.add_argument(
        "--ahead",
        type=float,
        help="create the bots this many seconds before joinAt with the default staging lead, so that the "
        "operator decides when to stage (runs of at least --ahead-min-size bots; default: off, full: 600)",
    )
    p.add_argument("--ahead-min-size", type=int, default=5000, help="smallest run created --ahead (default 5000)")
    p.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure the operator of this git commit (before ours, same sizes, same run): side by side",
    )
    p.add_argument("--ours", metavar="REF", help="measure our operator as of this commit (default: the working tree)")
    p.add_argument(
        "--operator-python",
        default=sys.executable,
        metavar="PATH",
        help="the interpreter the operators run under, with its packages (`make bench`: the image's alone, "
        ".venv-image; default: this one, whose test tools kopf would import too); the source goes on PYTHONPATH",
    )
    p.add_argument("--skip-precision", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--kubeconfig", default=str(ROOT / ".cluster" / "kubeconfig"))
    p.add_argument(
        "--plot", default=str(ROOT / "docs" / "benchmarks-lateness.png"), help="where the lateness plot goes (PNG)"
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "out"), help="logs and raw results (git-ignored)")
    return p.parse_args(argv)


def baseline_source(ref: str, out: Path) -> Path:
    """The operator package of commit `ref`, extracted under `out`: the baseline's PYTHONPATH."""
    target = out / f"baseline-{ref}"
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "operator"], cwd=ROOT, capture_output=True, check=True, timeout=60
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=60)
    return target / "operator"


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem_kb = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": sys.version.split()[0],
        "commit": commit,
    }


async def amain(args: argparse.Namespace) -> int:
    from bench import report
    from bench.precision import PrecisionPhase
    from bench.scale import ScalePhase

    mode = FULL if args.full else QUICK
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else mode["sizes"]
    runs = dict.fromkeys(sizes, args.runs) if args.runs else {s: mode["runs"].get(s, 1) for s in sizes}
    scale = args.scale if args.scale is not None else mode["scale"]
    idle = args.idle if args.idle is not None else mode["idle"]
    started = time.time()
    # A baseline operator measured first gets a budget of its own.
    deadline = started + mode["budget"] * (2 if args.baseline else 1)
    run_id = time.strftime("%m%d%H%M") + secrets.token_hex(2)
    out = Path(args.out) / run_id
    out.mkdir(parents=True, exist_ok=True)
    kubeconfig = Path(args.kubeconfig)
    if not apply_crds(kubeconfig):
        return 2
    kube = await Kube.connect(kubeconfig)
    command = (
        "python -m bench" + (" --full" if args.full else "") + "".join(f" {a}" for a in sys.argv[1:] if a != "--full")
    )
    results: dict[str, object] = {
        "machine": machine(),
        "command": command,
        "mode": "full" if args.full else "quick",
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    ahead = args.ahead if args.ahead is not None else mode["ahead"]
    operators: list[tuple[str, dict[str, str]]] = []
    if args.baseline and not args.skip_precision:
        operators.append(("base", {"PYTHONPATH": str(baseline_source(args.baseline, out))}))
        results["baseline_commit"] = args.baseline
    if args.ours:
        results["machine"]["commit"] = args.ours  # type: ignore[index]
    # Ours from a commit, too: the working tree may change while a long run goes on.
    ours = {"PYTHONPATH": str(baseline_source(args.ours, out) if args.ours else ROOT / "operator")}
    operators.append(("join", ours))
    results["operator_python"] = args.operator_python
    try:
        for name, env in operators if not args.skip_precision else []:
            # Each operator gets the same budget, whatever the one before it took.
            phase_deadline = time.time() + mode["budget"] - (mode["scale_reserve"] if not args.skip_scale else 0)
            phase = PrecisionPhase(
                kube=kube,
                kubeconfig=kubeconfig,
                out=out,
                run_id=run_id,
                sizes=sizes,
                runs=runs,
                deadline=phase_deadline,
                operator_args=args.operator_arg,
                name=name,
                operator_env=env,
                operator_python=args.operator_python,
                ahead=ahead,
                ahead_min_size=args.ahead_min_size,
            )
            key = "baseline" if name == "base" else "precision"
            try:
                await phase.run()
            finally:
                # What was measured is kept, whatever stopped the phase.
                results[key] = [r.__dict__ for r in phase.results]
                results.setdefault("errors", []).extend(f"{name}: {e}" for e in phase.errors)  # type: ignore[attr-defined]
                if name != "base":
                    results["floor"] = phase.floor
        if not args.skip_scale and scale > 0:
            scale_phase = ScalePhase(
                kube=kube,
                kubeconfig=kubeconfig,
                out=out,
                run_id=run_id,
                count=scale,
                idle=idle,
                deadline=deadline,
                template=args.scale_template,
                operator_args=args.operator_arg,
                operator_env=ours,
                operator_python=args.operator_python,
                without_webhook=args.without_webhook,
            )
            results["scale"] = await scale_phase.run()
    except Exception as error:  # the table of what was measured is printed all the same
        log.exception("bench stopped early")
        results["error"] = f"{type(error).__name__}: {error}"[:500]
    finally:
        await kube.close()
    results["duration_s"] = time.time() - started
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot = report.plot(results, Path(args.plot)) if results.get("precision") else None
    summary = report.summary(results, plot=plot)
    (out / "summary.md").write_text(summary + "\n")
    print(summary, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
