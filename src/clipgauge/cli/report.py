"""`clipgauge report | advise`: thin argparse layer over clipgauge.report and clipgauge.analysis."""

from __future__ import annotations

from pathlib import Path

from clipgauge.cli.options import (
    DATA_HELP,
    DTYPE_CHOICES,
    TEMPLATE_HELP,
    add_cache_options,
    cache_arg,
    csv_list,
    template_arg,
)


def cmd_report(args) -> int:
    from clipgauge.analysis.load import load_study
    from clipgauge.analysis.summary import format_method_table, method_summary, verdict_sentence
    from clipgauge.report.build import build_report

    study = load_study(args.dir)
    summary = method_summary(study)
    md_path = build_report(study)
    print(format_method_table(summary))
    n_tasks = int(summary["n_tasks"].max()) if len(summary) else 0
    print(verdict_sentence(summary, n_tasks) if len(summary) else "No runs.")
    print_findings(Path(md_path).parent / "summary.json")
    print(f"wrote {md_path}")
    print(f"wrote {md_path.with_suffix('.html')}")
    print(f"wrote {Path(md_path).parent / 'summary.json'}")
    print(f"figures in {Path(md_path).parent / 'figures'}")
    return 0


def _number(value) -> str:
    return "n/a" if value is None else f"{value:+.3g}"


def print_findings(summary_path: Path) -> None:
    """The study's findings with their verdicts and intervals, from its summary.json."""
    import json

    summary = json.loads(summary_path.read_text())
    if summary.get("findings"):
        print("findings (95% interval of the statistic; the report states each rule):")
    for finding in summary.get("findings", []):
        lo, hi = (_number(x) for x in finding["ci"])
        print(
            f"  {finding['verdict']:<13} {finding['finding']}: {finding['statistic']} = "
            f"{_number(finding['value'])} [{lo}, {hi}]"
        )
    check = summary.get("advice_check") or {}
    if check.get("per_task"):
        baselines = check["baselines"]
        print(
            f"advice check (leave one task out): mean regret {_number(check['mean_regret'])} "
            f"pp; always the overall best {_number(baselines['overall_best'])} pp, always "
            f"zero-shot {_number(baselines['zeroshot'])} pp"
        )


def cmd_advise(args) -> int:
    from clipgauge.analysis.advise import advise

    advice = advise(
        args.study,
        args.data,
        model=args.model,
        templates=template_arg(args.template),
        domains=args.domains,
        cache=cache_arg(args),
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    measure = advice.measure or "no measure"
    print(f"new task: {measure} = {advice.measure_value:.4g}")
    print(advice.table())
    print(f"recommended: {advice.recommended}")
    print(advice.reason)
    for note in advice.notes:
        print(f"note: {note}")
    if args.json:
        print(f"wrote {advice.save_json(args.json)}")
    return 0


def add_commands(subparsers) -> None:
    """Register `report` and `advise` on the main parser's subcommands."""
    p = subparsers.add_parser(
        "report",
        help="rebuild report.md, report.html and figures of a study folder from its databases",
    )
    p.add_argument("dir", help="study folder (holding study*.sqlite)")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser(
        "advise",
        help="measure a new task zero-shot and recommend a fine-tuning method from a study",
    )
    p.add_argument("--study", required=True, help="study folder (holding study*.sqlite)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument(
        "--model",
        default=None,
        help="CLIP checkpoint to measure with (default: the study's model; others are not "
        "comparable)",
    )
    p.add_argument("--template", action="append", default=None, help=TEMPLATE_HELP)
    p.add_argument("--domains", type=csv_list, default=None, help="comma-separated domain names")
    p.add_argument("--json", default=None, help="also write the advice and predictions here")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--dtype", default="fp32", choices=DTYPE_CHOICES)
    p.add_argument("--batch-size", type=int, default=64)
    add_cache_options(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_advise)
