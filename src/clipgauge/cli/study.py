"""`clipgauge study [SPEC]`: a thin argparse layer over `run_study`."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from clipgauge.cli.report import print_findings


def basic_method_table(out_dir: str | Path) -> str:
    """Mean overall ID and DG accuracy and CF drop per method over every finished run in the
    folder (used when `clipgauge.analysis` is not available)."""
    from clipgauge.measures import ACCURACY, OVERALL
    from clipgauge.study.store import open_all

    query = (
        "SELECT r.method, m.protocol, m.run_id, m.eval_task, m.value FROM metrics m "
        "JOIN runs r ON r.run_id = m.run_id WHERE r.status = 'finished' AND m.name = ? "
        "AND m.domain = ? AND m.protocol IN ('id', 'dg', 'cf_before', 'cf_after')"
    )
    values: dict[str, dict[str, dict]] = {}
    for connection in open_all(out_dir):
        for method, protocol, run_id, task, value in connection.execute(query, (ACCURACY, OVERALL)):
            per_run = values.setdefault(method, {}).setdefault(run_id, {})
            per_run[(protocol, task)] = value

    def mean(xs):
        xs = [x for x in xs if x is not None and not math.isnan(x)]
        return sum(xs) / len(xs) if xs else math.nan

    lines = [f"{'method':<14} {'runs':>5} {'ID acc':>7} {'DG acc':>7} {'CF drop':>8}"]
    for method, runs in values.items():
        ids, dgs, drops = [], [], []
        for cells in runs.values():
            ids += [v for (p, _), v in cells.items() if p == "id"]
            dgs += [v for (p, _), v in cells.items() if p == "dg"]
            for (p, task), before in cells.items():
                after = cells.get(("cf_after", task))
                if p == "cf_before" and before is not None and after is not None:
                    drops.append(before - after)
        lines.append(
            f"{method:<14} {len(runs):>5} {mean(ids):>7.3f} {mean(dgs):>7.3f} {mean(drops):>8.3f}"
        )
    return "\n".join(lines)


def _method_table(out_dir: Path) -> str:
    try:
        from clipgauge.analysis.summary import method_table
    except ImportError:
        return basic_method_table(out_dir)
    try:
        return method_table(out_dir)
    except Exception as err:  # noqa: BLE001 - fall back to the plain table, saying why
        print(f"(analysis failed: {type(err).__name__}: {err})", file=sys.stderr)
        return basic_method_table(out_dir)


def _build_report(out_dir: Path):
    try:
        from clipgauge.report import build_report
    except ImportError:
        return None
    return build_report(out_dir)


def cmd_study(args) -> int:
    from clipgauge.study.runner import run_study

    result = run_study(
        args.spec,
        args.out,
        shard=args.shard,
        workers=args.workers,
        progress=not args.no_progress,
        prune=args.prune,
        executor=args.executor,
        ray_address=args.ray_address,
        storage=args.storage,
    )
    pruned = f", {result.pruned} stale run(s) deleted" if result.pruned else ""
    print(
        f"{result.planned} run(s) in {result.database}: {result.finished} finished now, "
        f"{result.skipped} already finished, {len(result.failed)} failed{pruned} "
        f"({result.seconds:.0f} s)"
    )
    print()
    print(_method_table(result.out_dir))
    try:
        report = _build_report(result.out_dir)
    except Exception as err:  # noqa: BLE001 - the results are stored; say so and go on
        print(
            f"\nthe study's results are stored, but building the report failed "
            f"({type(err).__name__}: {err}); retry with `clipgauge report {result.out_dir}`",
            file=sys.stderr,
        )
        return 1
    if report is not None:
        print()
        print_findings(Path(report).parent / "summary.json")
        print(f"\nreport: {report} (summary.json beside it)")
    if result.failed:
        print(f"\n{len(result.failed)} run(s) failed:", file=sys.stderr)
        for label, error in result.failed:
            print(f"  {label}: {error.splitlines()[0] if error else ''}", file=sys.stderr)
        print("rerun the same command to retry them (finished runs are kept)", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a study: every method on every task and seed, resumable, into SQLite",
        description="Fine-tune every method of a study spec on every task and seed, evaluate "
        "in-domain accuracy, domain generalization and forgetting, and store everything in "
        "<out>/study.sqlite. Rerunning continues where it stopped.",
    )
    p.add_argument(
        "spec",
        nargs="?",
        default=None,
        help="study spec YAML, or a shipped spec: world (default), paper",
    )
    p.add_argument("--out", default=None, help="study folder (default: studies/<spec name>)")
    p.add_argument(
        "--executor",
        choices=["local", "processes", "ray"],
        default=None,
        help="where runs execute: local (this process), processes (--workers worker "
        "processes, one GPU each where there are GPUs) or ray (a Ray cluster; needs "
        "clipgauge[ray]); default: processes when --workers > 1, else local",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="runs at once, in worker processes on this machine (default 1)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="with --executor ray: the cluster to join, e.g. auto (the one `ray start` "
        "started on this machine) or HEAD_IP:6379; default: RAY_ADDRESS, else a running "
        "local cluster, else a new one on this machine",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="with --executor ray: the folder for run folders and the embedding cache, which "
        "every node must be able to write (default: the --out folder)",
    )
    p.add_argument(
        "--shard",
        default=None,
        help="I/N (1-based): run only the runs whose index %% N == I-1, into "
        "study-shard-I-of-N.sqlite; run every shard into the same folder (or copy the files "
        "together) and the report reads them all",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="delete stored runs the spec no longer plans (after editing the spec)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_study)
