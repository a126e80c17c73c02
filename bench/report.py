"""The figures: medians over runs, the targets, the plot, and the summary printed last."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.stats import median
from localcluster.stats import percentile

TRANSITIONS = ("scheduled", "staged", "joining", "joined", "ended")

TARGETS = {
    "1 bot p99 at the bot": ("ms", 5.0),
    "1000 bots p99 at the bot": ("ms", 30.0),
    "RSS with the waiting bots": ("MB", 250.0),
    "creation->scheduled p99": ("s", 1.0),
    "caught up after restart": ("s", 60.0),
    "status writes per transition": ("", 1.0),
    "other writes per lifecycle": ("", 3.0),
}


def by_size(results: dict[str, Any], key: str = "precision") -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for run in results.get(key) or []:
        out.setdefault(run["size"], []).append(run)
    return out


def _med(runs: list[dict[str, Any]], key: str, q: float | str) -> float:
    values = []
    for run in runs:
        data = run.get(key)
        if not data:
            continue
        values.append(max(data) if q == "max" else percentile(data, float(q)))
    return median(values)


def precision_rows(results: dict[str, Any], phase: str = "precision") -> list[dict[str, Any]]:
    rows = []
    for size, runs in sorted(by_size(results, phase).items()):
        row: dict[str, Any] = {"size": size, "runs": len(runs)}
        for key in ("bot", "bot_kernel", "operator", "naive", "naive_kernel"):
            for q in ("50", "99", "max"):
                row[f"{key}_{q}"] = _med(runs, key, q)
        row["operator_mean"] = median([r["operator_mean"] for r in runs])
        row["ratio_p99"] = row["naive_99"] / row["bot_99"] if row["bot_99"] else math.nan
        row["ratio_p50"] = row["naive_50"] / row["bot_50"] if row["bot_50"] else math.nan
        row["ratio_kernel_p99"] = row["naive_kernel_99"] / row["bot_kernel_99"] if row["bot_kernel_99"] else math.nan
        row["missing"] = sum(r["missing_bot"] for r in runs)
        row["idle_margin"] = min(r["idle_margin_s"] for r in runs)
        row["staged_s"] = median([r["staged_s"] for r in runs])
        row["published_s"] = median([r.get("published_s", math.nan) for r in runs])
        row["not_ready"] = sum(r["not_ready"] for r in runs)
        row["failed"] = sum(r.get("failed", 0) for r in runs)
        row["default_lead"] = any(r.get("default_lead") for r in runs)
        row["ahead_s"] = median([r.get("ahead_s", math.nan) for r in runs])
        for loop in ("dispatcher", "operator"):
            row[f"lag_{loop}"] = median([r.get("loop_lag", {}).get(loop, math.nan) for r in runs])
        names = {name for r in runs for name in r.get("cpu_publishing", {})}
        row["cpu_publishing"] = {
            name: median([r.get("cpu_publishing", {}).get(name, math.nan) for r in runs]) for name in names
        }
        for part in ("status", "other", "events"):
            row[f"api_{part}"] = median([r["api"].get(part, math.nan) for r in runs])
        for part in ("status", "bot-writes", "events", "pod-create", "pod-delete", "secret-writes", "reads", "rest"):
            row[f"apf_{part}"] = median([r.get("apf", {}).get(part, math.nan) for r in runs])
        for part in ("status", "finalizers"):
            row[f"watched_{part}"] = median([r["watched"].get(part, 0.0) for r in runs])
        reasons: dict[str, float] = {}
        for r in runs:
            for reason, n in r["events"].items():
                reasons[reason] = reasons.get(reason, 0) + n / size / len(runs)
        row["event_reasons"] = reasons
        row["events_ns"] = sum(reasons.values())
        row["other_operators"] = max(r["other_operators"] for r in runs)
        row["lifecycle_ok"] = all(r["lifecycle_ok"] for r in runs)
        row["notes"] = "; ".join(sorted({r["naive_note"].strip() for r in runs if r["naive_note"].strip()}))
        rows.append(row)
    return rows


def plot(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = by_size(results)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for color, (size, runs) in zip(colors, sorted(groups.items()), strict=False):
        for key, style, label in (
            ("bot", "-", "operator"),
            ("bot_kernel", ":", "operator, kernel stamp"),
            ("naive", "--", "naive fan-out"),
        ):
            values = sorted(v * 1000 for r in runs for v in r.get(key) or [])
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            name = f"{size:,} bot{'s' if size > 1 else ''}: {label}"
            xs = [max(v, 0.01) for v in values]
            if len(values) < 20:  # a few single-bot runs: points, not a staircase
                ax.plot(xs, ys, style, marker={"-": "o", ":": ".", "--": "x"}[style], color=color, label=name)
            else:
                ax.step(xs, ys, style, where="post", color=color, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("join lateness at the bot (stub read stamp - joinAt; dotted: kernel receive stamp), ms, log scale")
    ax.set_ylabel("fraction of bots")
    ax.set_title(
        "Bots sharing one joinAt, all runs pooled: the operator (solid) vs a naive asyncio fan-out (dashed)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def instant_table(results: dict[str, Any]) -> list[str]:
    """The join instant, per size: the baseline operator (if measured) beside ours, same run."""
    commit = results["machine"]["commit"]
    labelled = (
        [(f"base {results['baseline_commit']}", precision_rows(results, "baseline"))] if "baseline" in results else []
    )
    labelled.append((f"ours {commit}", precision_rows(results)))
    if not any(rows for _, rows in labelled):
        return []
    lines = [
        "the join instant: ms at the bot (p50 / p99 / max), Pods Ready before joinAt, bots failed, event-loop lag "
        "at the instant (the operator's metric; dispatcher / operator loop), and joinAt -> every bot shows "
        "`joining` (or failed)",
        "",
        "| bots | operator | created ahead | at the bot, ms | naive p99, ms | Ready before joinAt | failed "
        "| loop lag, ms | all `joining` after | Events per bot |",
        "|---:|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    sizes = sorted({r["size"] for _, rows in labelled for r in rows})
    for size in sizes:
        for label, rows in labelled:
            r = next((row for row in rows if row["size"] == size), None)
            if r is None:
                continue
            trio = " / ".join(_f(r[f"bot_{q}"] * 1000, 2) for q in ("50", "99", "max"))
            lead = "default lead" if r["default_lead"] else "lead covers it"
            ready = size * r["runs"] - r["not_ready"]
            lines.append(
                f"| {size:,} | {label} | {_f(r['ahead_s'], 0)} s, {lead} | {trio} | {_f(r['naive_99'] * 1000, 1)} "
                f"| {ready:,} of {size * r['runs']:,} | {r['failed']} "
                f"| {_f(r['lag_dispatcher'] * 1000, 2)} / {_f(r['lag_operator'] * 1000, 2)} "
                f"| {_f(r['published_s'])} s | {_f(r['events_ns'], 2)} |"
            )
    return [*lines, ""]


def _cpu_text(cpu: dict[str, float]) -> str:
    """CPU seconds by process, the largest first: where the cores went meanwhile."""
    if not cpu:
        return ""
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]))
    return f" (CPU s meanwhile: {parts})"


def summary(results: dict[str, Any], *, plot: Path | None) -> str:
    m = results["machine"]
    lines = [
        f"## scheduledbot bench ({results['mode']}) {results['started']}, commit {m['commit']}",
        f"machine: {m['nproc']} cores, {m['cpu']}, {m['memory']}, Python {m['python']}; "
        f"took {results['duration_s']:.0f} s; command: {results['command']}",
        "",
    ]
    if results.get("error"):
        lines += [f"**the bench stopped early**: {results['error']} (below: what was measured until then)", ""]
    lines += [f"- a run failed: {e}" for e in results.get("errors") or []]
    rows = precision_rows(results)
    lines += instant_table(results)
    checks: list[tuple[str, float, str]] = []
    if rows:
        lines += [
            "join lateness, ms: p50 / p99 / max (each the median over the runs); at the bot: the stub's read stamp "
            "[the kernel's receive stamp]",
            "",
            "| bots | runs | ours at the bot | ours at the operator (status, 1 ms res.) | operator mean (histogram) "
            "| naive fan-out at the bot | naive / ours, p99 |",
            "|---:|---:|---|---|---:|---|---:|",
        ]

        def trio(r: dict[str, Any], key: str, digits: int = 2) -> str:
            return " / ".join(_f(r[f"{key}_{q}"] * 1000, digits) for q in ("50", "99", "max"))

        for r in rows:
            lines.append(
                f"| {r['size']:,} | {r['runs']} | {trio(r, 'bot')} [{trio(r, 'bot_kernel')}] | "
                f"{trio(r, 'operator', 0)} | {_f(r['operator_mean'] * 1000, 3)} | "
                f"{trio(r, 'naive')} [{trio(r, 'naive_kernel')}] | "
                f"{_f(r['ratio_p99'], 1)}x [{_f(r['ratio_kernel_p99'], 1)}x] |"
            )
        lines.append("")
        floor = results.get("floor") or []
        if floor:

            def stats(samples: list[float]) -> str:
                if not samples:
                    return "n/a"
                return (
                    f"{_f(percentile(samples, 50) * 1000, 2)} / {_f(percentile(samples, 99) * 1000, 2)} / "
                    f"{_f(max(samples) * 1000, 2)}"
                )

            parts = [f"{stats(f['read'])} [{stats(f['kernel'])}]" for f in floor]
            when = ("before the runs", "after them")
            lines.append(
                "measurement floor, a ping written on time by another process, p50 / p99 / max ms: "
                + "; ".join(f"{p} {w}" for p, w in zip(parts, when, strict=True))
            )
        lines.append("")
        lines += [
            "API requests per bot over a whole lifecycle (scheduled, staged, joining, joined, ended: 5 transitions), "
            "counted by the API server for the operator's own ServiceAccount (APF FlowSchemas; cross-checks: "
            "apiserver_request_total of all clients / our watch)",
            "",
            "| bots | status writes | per transition | finalizer writes | Events (by reason) "
            "| Pod creates (+ webhook dry-runs) / deletes, Secret writes, reads | cross-check status, other, Events |",
            "|---:|---:|---:|---:|---|---|---|",
        ]
        for r in rows:
            reasons = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["event_reasons"].items()))
            lines.append(
                f"| {r['size']:,} | {_f(r['apf_status'], 2)} | {_f(r['apf_status'] / len(TRANSITIONS), 2)} | "
                f"{_f(r['apf_bot-writes'], 2)} | {_f(r['apf_events'], 2)} ({reasons}) | "
                f"{_f(r['apf_pod-create'], 2)} / {_f(r['apf_pod-delete'], 2)}, {_f(r['apf_secret-writes'], 2)}, "
                f"{_f(r['apf_reads'], 2)} | "
                f"{_f(r['api_status'], 2)} / {_f(r['watched_status'], 2)}, {_f(r['api_other'], 2)} / "
                f"{_f(r['watched_finalizers'], 2)}, {_f(r['api_events'], 2)} / {_f(r['events_ns'], 2)} |"
            )
        lines.append("")

        def bots(r: dict[str, Any]) -> str:
            return f"{r['size']:,} bot{'s' if r['size'] > 1 else ''}"

        notes = [f"{bots(r)}: {r['missing']} bots without a stamped join" for r in rows if r["missing"]]
        notes += [f"{bots(r)}: lifecycle incomplete" for r in rows if not r["lifecycle_ok"]]
        notes += [
            f"{bots(r)}: {r['other_operators']} other operator(s) ran meanwhile: "
            f"apiserver_request_total includes their writes"
            for r in rows
            if r["other_operators"]
        ]
        notes += [f"{bots(r)}: {r['notes']}" for r in rows if r["notes"]]
        notes += [
            f"{bots(r)}: all Ready {r['staged_s']:.1f} s after the first create (smallest idle margin "
            f"before joinAt {r['idle_margin']:.1f} s); all shown `joining` {_f(r['published_s'])} s after joinAt"
            f"{_cpu_text(r['cpu_publishing'])}"
            for r in rows
        ]
        lines += [f"- {n}" for n in notes] + [""]
        one = next((r for r in rows if r["size"] == 1), None)
        thousand = next((r for r in rows if r["size"] == 1000), None)
        if one:
            checks.append(("1 bot p99 at the bot", one["bot_99"] * 1000, f"{one['bot_99'] * 1000:.2f} ms"))
        if thousand:
            checks.append(
                (
                    "1000 bots p99 at the bot",
                    thousand["bot_99"] * 1000,
                    f"{thousand['bot_99'] * 1000:.2f} ms (naive {thousand['naive_99'] * 1000:.1f} ms)",
                )
            )
        status = max(r["apf_status"] for r in rows) / len(TRANSITIONS)
        checks.append(("status writes per transition", status, f"{status:.2f} (worst size)"))
        other = max(r["apf_bot-writes"] for r in rows)
        checks.append(("other writes per lifecycle", other, f"{other:.2f} finalizer writes (worst size)"))
    scale = results.get("scale")
    if scale:
        s = scale
        cpu = s.get("cpu_during_creation_s") or {}
        cpu_text = ", ".join(
            f"{k} {v / s['count'] * 1000:.1f}"
            for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
            if v / s["count"] >= 0.00005
        )
        paced = s.get("paced") or {}
        lines += [
            f"scale: {s['count']:,} ScheduledBots waiting in `scheduled` (joinAt {6} h ahead; "
            f"{'with' if s.get('template') else 'without'} a Pod template"
            f"{'; webhook configuration removed' if s.get('without_webhook') else ''})",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| burst: creates, 32 in flight | {s['create_s']:.1f} s, {s['creates_per_s']:.0f}/s |",
            f"| burst: creation -> scheduled p50 / p99 / max | {_f(s['to_scheduled']['p50'], 3)} / "
            f"{_f(s['to_scheduled']['p99'], 3)} / {_f(s['to_scheduled']['max'], 3)} s |",
            f"| burst: all scheduled after the first create | {s['all_scheduled_s']:.1f} s |",
            f"| burst: CPU ms per bot by process | {cpu_text} |",
        ]
        if paced:
            t = paced["to_scheduled"]
            lines.append(
                f"| paced ({paced['count']} more at {paced['rate_per_s']}/s): creation -> scheduled p50 / p99 "
                f"/ max | {_f(t['p50'] * 1000)} / {_f(t['p99'] * 1000)} / {_f(t['max'] * 1000)} ms |"
            )
        lines += [
            f"| operator RSS: empty / {s['count']:,} waiting after the burst / after a restart, caught up "
            f"/ 30 s later | {s['rss_empty_mb']:.0f} / {s['rss_mb']:.0f} / {s['restart_rss_mb']:.0f} / "
            f"{_f(s.get('restart_rss_settled_mb'), 0)} MB |",
            f"| idle CPU ({s['idle_window_s']:.0f} s window, {s['count']:,} waiting) | "
            f"{s['idle_cpu_s_per_min']:.3f} s per minute |",
            f"| restart (SIGKILL, start): healthy / all {s['count'] + 1:,} known / fresh bot scheduled | "
            f"{_f(s['restart_healthy_s'])} / {_f(s['restart_all_known_s'])} / {_f(s['restart_fresh_scheduled_s'])} s |",
            f"| restart: caught up (both) | {_f(s['restart_caught_up_s'])} s |",
            f"| restart: status writes, CPU until caught up | {s['restart_status_writes']:.0f}, "
            f"{s['restart_cpu_s']:.1f} s |",
            "",
        ]
        worst_rss = max(s["rss_mb"], s["restart_rss_mb"], s.get("restart_rss_settled_mb") or 0)
        checks.append(
            (
                "RSS with the waiting bots",
                worst_rss,
                f"{worst_rss:.0f} MB with {s['count']:,} (worst of: after the burst, after a restart)",
            )
        )
        checks.append(("creation->scheduled p99", s["to_scheduled"]["p99"], f"{s['to_scheduled']['p99']:.3f} s"))
        checks.append(("caught up after restart", s["restart_caught_up_s"], f"{s['restart_caught_up_s']:.1f} s"))
    if plot is not None:
        lines += [f"plot: {plot}", ""]
    lines.append("targets:")
    for name, value, shown in checks:
        unit, limit = TARGETS[name]
        ok = not math.isnan(value) and value <= limit
        lines.append(
            f"  {'MET ' if ok else 'MISS'} {name}: {shown} (target <= {limit:g}{(' ' + unit) if unit else ''})"
        )
    if scale:
        lines.append(f"  info idle CPU: {scale['idle_cpu_s_per_min']:.3f} s per idle minute (target: near zero)")
    return "\n".join(lines)
