"""`python -m bench.notify`: a notification sink that never answers must not make joins late.

The precision phase (bench/precision.py: N bots sharing one joinAt, staged, signalled
at joinAt, stamped by the stub) runs with two operators in turn, alternating, in one
invocation:

- `without`: no notification sink;
- `silent sink`: every bot's changes go to the operator's default sink, the local
  receiver (tools/localcluster/receiver.py) told to hang on every request, so that
  each attempt ends only at the egress timeout (15 s) and the deliverer's slots
  (--notify-concurrency) are all taken, with every bot's outbox waiting, when joinAt
  comes.

It prints the join lateness of both side by side (the operator's joinSignaledAt and
the stub's read stamp, minus joinAt) and what the silent sink received meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
import time
from pathlib import Path

from bench.kube import Kube
from bench.precision import PrecisionPhase, RunResult
from bench.processes import ROOT, apply_crds
from bench.stats import fmt_ms, summary
from localcluster.receiver import Answer, WebhookReceiverProcess

log = logging.getLogger("bench")

#: More hanging answers than the runs can ask for: each attempt takes one.
HANGS = 5000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.notify", description=__doc__.splitlines()[0])
    p.add_argument("--bots", type=int, default=100, help="bots sharing one joinAt per run (default %(default)s)")
    p.add_argument("--runs", type=int, default=2, help="runs of each variant, alternating (default %(default)s)")
    p.add_argument(
        "--lead", type=float, default=45.0, help="seconds from the last bot created to joinAt (default %(default)s)"
    )
    p.add_argument(
        "--stub-port",
        type=int,
        default=18191,
        help="the bots' control port (default %(default)s: not the main benchmark's, which may run beside)",
    )
    p.add_argument("--kubeconfig", default=str(ROOT / ".cluster" / "kubeconfig"))
    p.add_argument("--out", default=str(ROOT / "bench" / "out"), help="logs and raw results (git-ignored)")
    return p.parse_args(argv)


async def variant(
    kube: Kube,
    *,
    kubeconfig: Path,
    out: Path,
    name: str,
    bots: int,
    lead_base: float,
    stub_port: int,
    operator_args: list[str],
) -> list[RunResult]:
    run_id = time.strftime("%m%d%H%M") + secrets.token_hex(2)
    directory = out / f"{run_id}-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    phase = PrecisionPhase(
        kube=kube,
        kubeconfig=kubeconfig,
        out=directory,
        run_id=run_id,
        sizes=[bots],
        runs={bots: 1},
        deadline=time.time() + 900,
        operator_args=operator_args,
        # Every bot staged and Ready well before joinAt even on a busy machine: late staging
        # would show up as lateness in both variants and hide what this compares.
        lead_base=lead_base,
        stub_port=stub_port,
    )
    return await phase.run()


def line(name: str, results: list[RunResult]) -> str:
    operator = summary([value for r in results for value in r.operator])
    bot = summary([value for r in results for value in r.bot])
    margin = min((r.idle_margin_s for r in results), default=float("nan"))
    not_ready = sum(r.not_ready for r in results)
    cells = [name, str(len(results)), str(not_ready), f"{margin:.1f}", str(operator["n"])]
    cells += [fmt_ms(operator[q]) for q in ("p50", "p99", "max")] + [fmt_ms(bot[q]) for q in ("p50", "p99", "max")]
    return "| " + " | ".join(cells) + " |"


async def amain(args: argparse.Namespace) -> int:
    kubeconfig = Path(args.kubeconfig)
    if not apply_crds(kubeconfig):
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[RunResult]] = {"without": [], "silent sink": []}
    received: list[int] = []
    kube = await Kube.connect(kubeconfig)
    try:
        with WebhookReceiverProcess() as receiver:
            key_file = out / "notify-bench.key"
            key_file.write_text(receiver.key)
            silent = [
                f"--default-notify-url={receiver.url('bench')}",
                f"--default-notify-signing-key-file={key_file}",
                f"--extra-notify-hosts={receiver.base_url.removeprefix('http://')}",
            ]
            for index in range(args.runs):
                for name, extra in (("without", []), ("silent sink", silent)):
                    receiver.reset()
                    receiver.script(*[Answer(hang=True)] * HANGS)
                    log.info("run %d of %d: %s", index + 1, args.runs, name)
                    results[name] += await variant(
                        kube,
                        kubeconfig=kubeconfig,
                        out=out,
                        name=name.replace(" ", "-"),
                        bots=args.bots,
                        lead_base=args.lead,
                        stub_port=args.stub_port,
                        operator_args=extra,
                    )
                    if extra:
                        received.append(len(receiver.attempts()))
    finally:
        await kube.close()
    table = [
        f"join lateness of {args.bots} bots sharing one joinAt, {args.runs} runs of each variant, alternating "
        f"(ms; operator: joinSignaledAt - joinAt, 1 ms resolution; bot: the stub's read stamp - joinAt)",
        "",
        "| variant | runs | not Ready at joinAt | least idle margin (s) | joins | operator p50 | operator p99 "
        "| operator max | bot p50 | bot p99 | bot max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        line("without a sink", results["without"]),
        line("a sink that never answers", results["silent sink"]),
        "",
        f"attempts the silent sink received during each of its runs (none answered): {received}",
    ]
    text = "\n".join(table)
    (out / "notify-bench.json").write_text(
        json.dumps({name: [r.__dict__ for r in runs] for name, runs in results.items()}, default=str)
    )
    print(text, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    try:
        return asyncio.run(amain(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
